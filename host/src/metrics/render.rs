//! Scrape-time rendering: sums the arena's slots and the arbiter's own figures into a snapshot,
//! and encodes it with `prometheus-client` from a custom collector (the crate writes OpenMetrics
//! text; for plain Prometheus scrapers the same text goes out as `text/plain; version=0.0.4`
//! without the `# EOF` trailer, which that format reads as a comment).
use super::arena::{Arena, HistogramSum, INSTANTIATION_BUCKETS, KEYVALUE_BUCKETS, REQUEST_BUCKETS};
use super::kernel::ListenQueue;
use super::labels::{split_key, split_keyvalue_key, OUTBOUND_RESULTS, OUTCOMES};
use crate::state::keyvalue::op::{OP_NAMES, OUTCOME_NAMES};
use crate::log::LogKind;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the arbiter knows about its workers and sockets at scrape time.
#[derive(Debug, Clone, Default)]
pub struct ArbiterFigures {
    pub generation: u64,
    pub workers_by_state: Vec<(&'static str, usize)>,
    pub restarts_by_reason: Vec<(&'static str, u64)>,
    pub listen_queues: Vec<ListenQueue>,
    /// Summed over live workers, in bytes.
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    /// Log lines the arbiter itself dropped (`crate::log::dropped_counts` in its process).
    pub log_lines_dropped: [u64; LogKind::ALL.len()],
}

/// Every figure of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// (method label, status) → request durations.
    pub requests: BTreeMap<(&'static str, u16), HistogramSum>,
    pub request_overflow: u64,
    pub active: i64,
    pub outcomes: Vec<u64>,
    pub instantiation: HistogramSum,
    pub queue_time: HistogramSum,
    pub shed_queue_time: u64,
    pub outbound: Vec<u64>,
    /// Dropped log lines of the workers (live and retired), per log; the arbiter's own are added
    /// when rendered.
    pub log_lines_dropped: [u64; LogKind::ALL.len()],
    /// (bucket, operation) → operations per outcome (in `OUTCOME_NAMES` order) and durations.
    pub keyvalue: BTreeMap<(String, &'static str), KeyvalueSum>,
    pub keyvalue_overflow: u64,
    pub arbiter: ArbiterFigures,
}

/// The key-value operations of one (bucket, operation), summed over slots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyvalueSum {
    pub outcomes: [u64; OUTCOME_NAMES.len()],
    pub duration: HistogramSum,
}

impl Snapshot {
    /// Sums the retired totals and every live slot.
    pub fn take(arena: &Arena, arbiter: ArbiterFigures) -> Snapshot {
        let mut s = Snapshot {
            outcomes: vec![0; OUTCOMES.len()],
            outbound: vec![0; OUTBOUND_RESULTS.len()],
            arbiter,
            ..Snapshot::default()
        };
        for slot in arena.live_and_retired() {
            for cell in &slot.requests {
                let key = cell.key.load(Relaxed);
                if key != 0 {
                    cell.histogram.add_to(s.requests.entry(split_key(key)).or_default());
                }
            }
            s.request_overflow += slot.request_overflow.load(Relaxed);
            for (total, counter) in s.outcomes.iter_mut().zip(&slot.outcomes) {
                *total += counter.load(Relaxed);
            }
            slot.instantiation.add_to(&mut s.instantiation);
            slot.queue_time.add_to(&mut s.queue_time);
            s.shed_queue_time += slot.shed_queue_time.load(Relaxed);
            for (total, counter) in s.outbound.iter_mut().zip(&slot.outbound) {
                *total += counter.load(Relaxed);
            }
            for (total, counter) in s.log_lines_dropped.iter_mut().zip(&slot.log_lines_dropped) {
                *total += counter.load(Relaxed);
            }
            s.add_keyvalue(arena, slot);
        }
        s.active = arena.live().map(|slot| slot.active.load(Relaxed)).sum::<i64>().max(0);
        s
    }

    fn add_keyvalue(&mut self, arena: &Arena, slot: &super::arena::Slot) {
        for cell in &slot.keyvalue {
            let key = cell.key.load(Relaxed);
            if key == 0 {
                continue;
            }
            let (label, op) = split_keyvalue_key(key);
            let Some(op) = OP_NAMES.get(op) else { continue };
            let sum = self.keyvalue.entry((arena.bucket_name(label).to_string(), op)).or_default();
            for (total, counter) in sum.outcomes.iter_mut().zip(&cell.outcomes) {
                *total += counter.load(Relaxed);
            }
            cell.duration.add_to(&mut sum.duration);
        }
        self.keyvalue_overflow += slot.keyvalue_overflow.load(Relaxed);
    }

    /// The exposition text: OpenMetrics (with `# EOF`) or Prometheus text.
    pub fn encode(self, openmetrics: bool) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::with_capacity(16 * 1024);
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut text, &registry)
        } else {
            prometheus_client::encoding::text::encode_registry(&mut text, &registry)
        };
        if let Err(e) = encoded {
            crate::log_error!("cannot encode the metrics: {e}");
        }
        text
    }
}

fn histogram(
    encoder: &mut MetricEncoder<'_>,
    labels: &impl EncodeLabelSet,
    bounds: &[f64],
    h: &HistogramSum,
) -> std::fmt::Result {
    plain_histogram(&mut encoder.encode_family(labels)?, bounds, h)
}

fn plain_histogram(encoder: &mut MetricEncoder<'_>, bounds: &[f64], h: &HistogramSum) -> std::fmt::Result {
    let mut buckets: Vec<(f64, u64)> = bounds.iter().copied().chain([f64::INFINITY]).map(|b| (b, 0)).collect();
    for (bucket, count) in buckets.iter_mut().zip(&h.buckets) {
        bucket.1 = *count;
    }
    encoder.encode_histogram::<NoLabelSet>(h.sum_ns as f64 / 1e9, h.count, &buckets, None)
}

fn counter(encoder: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, value: u64) -> std::fmt::Result {
    encoder.encode_family(labels)?.encode_counter::<NoLabelSet, u64, u64>(&value, None)
}

fn gauge(encoder: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, value: i64) -> std::fmt::Result {
    encoder.encode_family(labels)?.encode_gauge(&value)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        self.encode_worker_figures(&mut e)?;
        self.encode_keyvalue(&mut e)?;
        self.encode_arbiter_figures(&mut e)
    }
}

impl Snapshot {
    /// What the workers recorded in their arena slots: requests, guest outcomes, queue time,
    /// outbound requests, dropped log lines.
    fn encode_worker_figures(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut m = e.encode_descriptor(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests, from the request head to the end of the response",
            None,
            MetricType::Histogram,
        )?;
        for ((method, status), h) in &self.requests {
            let labels =
                [("http_request_method", method.to_string()), ("http_response_status_code", status.to_string())];
            histogram(&mut m, &labels, &REQUEST_BUCKETS, h)?;
        }
        let mut m = e.encode_descriptor(
            "rustcorn_request_label_overflow",
            "Requests left out of http_server_request_duration_seconds: a worker saw more distinct (method, status) pairs than it has room for",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, u64, u64>(&self.request_overflow, None)?;
        let mut m = e.encode_descriptor(
            "http_server_active_requests",
            "HTTP server requests in progress",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&self.active)?;
        let mut m =
            e.encode_descriptor("rustcorn_guest_outcomes", "How guest runs ended", None, MetricType::Counter)?;
        for (outcome, value) in OUTCOMES.iter().zip(&self.outcomes) {
            counter(&mut m, &[("outcome", *outcome)], *value)?;
        }
        let mut m = e.encode_descriptor(
            "rustcorn_guest_instantiation_seconds",
            "Time to instantiate the guest component for a request",
            None,
            MetricType::Histogram,
        )?;
        plain_histogram(&mut m, &INSTANTIATION_BUCKETS, &self.instantiation)?;
        let mut m = e.encode_descriptor(
            "rustcorn_request_queue_seconds",
            "Time between a trusted proxy's X-Request-Start stamp and a worker taking the request",
            None,
            MetricType::Histogram,
        )?;
        plain_histogram(&mut m, &REQUEST_BUCKETS, &self.queue_time)?;
        let mut m = e.encode_descriptor(
            "rustcorn_requests_shed",
            "Requests answered 503 without running the guest",
            None,
            MetricType::Counter,
        )?;
        counter(&mut m, &[("reason", "queue_time")], self.shed_queue_time)?;
        let mut m = e.encode_descriptor(
            "rustcorn_outbound_requests",
            "Outgoing HTTP requests of guests",
            None,
            MetricType::Counter,
        )?;
        for (result, value) in OUTBOUND_RESULTS.iter().zip(&self.outbound) {
            counter(&mut m, &[("result", *result)], *value)?;
        }
        let mut m = e.encode_descriptor(
            "rustcorn_log_lines_dropped",
            "Log lines dropped because the log could not take them without waiting (a stalled reader, a full disk)",
            None,
            MetricType::Counter,
        )?;
        for (i, kind) in LogKind::ALL.iter().enumerate() {
            let total = self.log_lines_dropped[i] + self.arbiter.log_lines_dropped[i];
            counter(&mut m, &[("log", kind.label())], total)?;
        }
        Ok(())
    }

    /// The workers' key-value operations, by bucket (names from the config), operation and outcome.
    fn encode_keyvalue(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut m = e.encode_descriptor(
            "rustcorn_keyvalue_operations",
            "wasi:keyvalue operations of guests, by bucket, operation and outcome",
            None,
            MetricType::Counter,
        )?;
        for ((bucket, op), sum) in &self.keyvalue {
            for (outcome, value) in OUTCOME_NAMES.iter().zip(&sum.outcomes) {
                counter(&mut m, &[("bucket", bucket.as_str()), ("op", op), ("outcome", outcome)], *value)?;
            }
        }
        let mut m = e.encode_descriptor(
            "rustcorn_keyvalue_operation_duration_seconds",
            "Duration of wasi:keyvalue operations, from the guest's call to its answer",
            None,
            MetricType::Histogram,
        )?;
        for ((bucket, op), sum) in &self.keyvalue {
            histogram(&mut m, &[("bucket", bucket.as_str()), ("op", op)], &KEYVALUE_BUCKETS, &sum.duration)?;
        }
        let mut m = e.encode_descriptor(
            "rustcorn_keyvalue_label_overflow",
            "Key-value operations left out of the key-value metrics: a worker saw more (bucket, operation) pairs than it has room for",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, u64, u64>(&self.keyvalue_overflow, None)
    }

    /// What the arbiter knows itself: workers, restarts, listen queues, generation, memory.
    fn encode_arbiter_figures(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let a = &self.arbiter;
        let mut m = e.encode_descriptor("rustcorn_workers", "Worker processes by state", None, MetricType::Gauge)?;
        for (state, count) in &a.workers_by_state {
            gauge(&mut m, &[("state", *state)], *count as i64)?;
        }
        let mut m = e.encode_descriptor(
            "rustcorn_worker_restarts",
            "Workers replaced, by why the old one went",
            None,
            MetricType::Counter,
        )?;
        for (reason, count) in &a.restarts_by_reason {
            counter(&mut m, &[("reason", *reason)], *count)?;
        }
        let mut m = e.encode_descriptor(
            "rustcorn_listen_queue_length",
            "Connections waiting in the kernel's accept queue (TCP listeners)",
            None,
            MetricType::Gauge,
        )?;
        for queue in &a.listen_queues {
            gauge(&mut m, &[("listener", queue.listener.as_str())], queue.length as i64)?;
        }
        let mut m = e.encode_descriptor(
            "rustcorn_listen_queue_limit",
            "The accept-queue limit (backlog) the kernel enforces (TCP listeners)",
            None,
            MetricType::Gauge,
        )?;
        for queue in &a.listen_queues {
            gauge(&mut m, &[("listener", queue.listener.as_str())], queue.limit as i64)?;
        }
        let mut m = e.encode_descriptor(
            "rustcorn_generation",
            "Current worker generation (HUP adds one)",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&(a.generation as i64))?;
        let mut m = e.encode_descriptor(
            "rustcorn_workers_resident_memory_bytes",
            "Resident set size summed over worker processes",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&(a.rss_bytes as i64))?;
        let mut m = e.encode_descriptor(
            "rustcorn_workers_proportional_memory_bytes",
            "Proportional set size (shared pages divided among sharers) summed over worker processes",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&(a.pss_bytes as i64))?;
        Ok(())
    }
}
