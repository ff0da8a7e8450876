//! `rustcorn serve`: resolve and validate the settings, then run the arbiter.
use crate::app::prepare as app;
use crate::arbiter::generation::ProcessSettings;
use crate::arbiter::{Arbiter, StartOptions};
use crate::config::cli::ServeArgs;
use crate::config::layers::{attribute_to_layer, Resolved};
use crate::config::settings::Settings;
use crate::{log_error, log_warning};
use std::path::PathBuf;

/// `rustcorn serve`: returns the process exit status.
/// `launch_dir` is the directory `rustcorn` was started in (HUP and USR2 resolve from there).
pub fn run(resolved: Resolved, launch_dir: PathBuf) -> i32 {
    let args = resolved.args.clone();
    if args.print_config {
        print!("{}", crate::config::layers::print_config(&resolved));
        return 0;
    }
    let process =
        match ProcessSettings::from_args(&args, &launch_dir).and_then(|process| process.apply().map(|()| process)) {
            Ok(process) => process,
            Err(e) => {
                eprintln!("rustcorn: error: {e:#}");
                return 1;
            }
        };
    let (settings, tls_warnings) = match checked_settings(&resolved) {
        Ok(checked) => checked,
        Err(message) => {
            eprintln!("rustcorn: error: {message}");
            return 1;
        }
    };
    if args.check_config {
        for warning in tls_warnings.iter().chain(&settings.warnings()) {
            eprintln!("rustcorn: warning: {warning}");
        }
        return check_config(&settings);
    }
    if let Err(e) = crate::log::init(&settings.error_log, settings.log_level) {
        eprintln!("rustcorn: error: --error-logfile {:?}: cannot open it: {e}", settings.error_log);
        return 1;
    }
    warn_at_startup(&args, &settings, tls_warnings);
    let error_log_is_a_file = matches!(settings.error_log, crate::log::LogTarget::File(_));
    match Arbiter::start(StartOptions { args, settings, process, launch_dir }) {
        Ok(arbiter) => arbiter.run(),
        Err(e) => {
            // One clear line on stderr, and in the error log too when that is a file.
            eprintln!("rustcorn: error: {e:#}");
            if error_log_is_a_file {
                log_error!("{e:#}");
            }
            1
        }
    }
}

/// The settings, with the TLS files read and checked (so a bad certificate stops the start
/// before anything forks), and the TLS warnings worth logging; an error names its layer.
fn checked_settings(resolved: &Resolved) -> Result<(Settings, Vec<String>), String> {
    let settings = Settings::from_args(&resolved.args).map_err(|e| attribute_to_layer(resolved, &e.to_string()))?;
    let tls_warnings = match &settings.tls {
        Some(tls) => crate::tls::validate_tls_files(tls, settings.protocols(true))
            .map_err(|e| attribute_to_layer(resolved, &format!("{e:#}")))?,
        None => Vec::new(),
    };
    Ok((settings, tls_warnings))
}

/// `--check-config`: the settings are valid; now the app.
fn check_config(settings: &Settings) -> i32 {
    match app::prepare(&settings.app, &settings.cache_dir) {
        Ok(_) => {
            println!("ok: settings and {} are valid", settings.app.display());
            0
        }
        Err(e) => {
            eprintln!("rustcorn: error: {e:#}");
            1
        }
    }
}

/// One warning line for each thing that is valid but probably not what was meant.
fn warn_at_startup(args: &ServeArgs, settings: &Settings, tls_warnings: Vec<String>) {
    for flag in args.gunicorn_only.given() {
        log_warning!("{flag} is a Gunicorn option with no meaning for rustcorn; ignored");
    }
    if args.tls.do_handshake_on_connect {
        log_warning!("--do-handshake-on-connect is a no-op: rustcorn always handshakes in the connection's own task");
    }
    for warning in tls_warnings.into_iter().chain(settings.warnings()) {
        log_warning!("{warning}");
    }
}
