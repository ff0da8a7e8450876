//! Which wasi:http world a component serves, told from its exports: the WASI 0.3 `service` world
//! (`wasi:http/handler@0.3.0`) or the WASI 0.2 `proxy` world (`wasi:http/incoming-handler@0.2.x`).
use anyhow::{anyhow, Result};
use std::path::Path;
use wasmtime::component::InstancePre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

/// The wasi:http world of an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// WASI 0.2: exports `wasi:http/incoming-handler@0.2.x`.
    Proxy02,
    /// WASI 0.3: exports `wasi:http/handler@0.3.0`.
    Service03,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            World::Proxy02 => f.write_str("wasi:http/proxy@0.2 (exports wasi:http/incoming-handler@0.2.x; WASI 0.2)"),
            World::Service03 => f.write_str("wasi:http/service@0.3.0 (exports wasi:http/handler@0.3.0; WASI 0.3)"),
        }
    }
}

impl World {
    /// Both worlds, in the order a precompiled app (whose world its bytes do not say) is tried.
    pub const ALL: [World; 2] = [World::Proxy02, World::Service03];

    /// The world a component's bytes say it serves: 0.3 when its top-level exports include
    /// `wasi:http/handler@0.3.*`, else 0.2 (which validation then confirms or explains). Read
    /// without compiling, because the engine that compiles it depends on the answer.
    pub fn of_component(bytes: &[u8]) -> World {
        use wasmtime::wasmparser::{Parser, Payload};
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(bytes) {
            match payload {
                Ok(Payload::Version { .. }) => depth += 1,
                Ok(Payload::End(_)) => depth = depth.saturating_sub(1),
                Ok(Payload::ComponentExportSection(exports)) if depth == 1 => {
                    let service =
                        exports.into_iter().flatten().any(|e| e.name.name.starts_with("wasi:http/handler@0.3."));
                    if service {
                        return World::Service03;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        World::Proxy02
    }
}

/// An app ready to instantiate, in the world it serves.
pub enum AppPre<T: 'static> {
    Proxy02(ProxyPre<T>),
    Service03(ServicePre<T>),
}

impl<T: 'static> AppPre<T> {
    /// The world of `pre`'s component: 0.3 when it exports the 0.3 handler, else 0.2; an error
    /// that names both handlers (and why each did not match) when it exports neither.
    pub fn new(pre: InstancePre<T>, app: &Path) -> Result<AppPre<T>> {
        let service = match ServicePre::new(pre.clone()) {
            Ok(service) => return Ok(AppPre::Service03(service)),
            Err(e) => e,
        };
        let proxy = match ProxyPre::new(pre) {
            Ok(proxy) => return Ok(AppPre::Proxy02(proxy)),
            Err(e) => e,
        };
        Err(anyhow!(
            "{} is not a servable wasi:http component: it must export wasi:http/incoming-handler@0.2.x \
             (the wasi:http/proxy world, WASI 0.2) or wasi:http/handler@0.3.0 (the wasi:http/service world, \
             WASI 0.3); as 0.2: {proxy}; as 0.3: {service}",
            app.display()
        ))
    }

    pub fn world(&self) -> World {
        match self {
            AppPre::Proxy02(_) => World::Proxy02,
            AppPre::Service03(_) => World::Service03,
        }
    }

    pub fn engine(&self) -> &wasmtime::Engine {
        match self {
            AppPre::Proxy02(pre) => pre.engine(),
            AppPre::Service03(pre) => pre.engine(),
        }
    }
}
