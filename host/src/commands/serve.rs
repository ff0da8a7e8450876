//! `rustcorn serve`: resolve and validate the settings, then run the arbiter.
use crate::app::prepare as app;
use crate::arbiter::generation::ProcessSettings;
use crate::arbiter::{Arbiter, StartOptions};
use crate::config::settings::Settings;
use crate::{log_error, log_warning};
use std::path::PathBuf;

/// `rustcorn serve`: returns the process exit status.
/// `launch_dir` is the directory `rustcorn` was started in (HUP and USR2 resolve from there).
pub fn run(resolved: crate::config::layers::Resolved, launch_dir: PathBuf) -> i32 {
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
    let settings = match Settings::from_args(&args) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("rustcorn: error: {}", attribute_to_layer(&resolved, &e.to_string()));
            return 1;
        }
    };
    if args.check_config {
        return match app::prepare(&settings.app, &settings.cache_dir) {
            Ok(_) => {
                println!("ok: settings and {} are valid", settings.app.display());
                0
            }
            Err(e) => {
                eprintln!("rustcorn: error: {e:#}");
                1
            }
        };
    }
    if let Err(e) = crate::log::init(&settings.error_log, settings.log_level) {
        eprintln!("rustcorn: error: --error-logfile {:?}: cannot open it: {e}", settings.error_log);
        return 1;
    }
    for flag in args.gunicorn_only.given() {
        log_warning!("{flag} is a Gunicorn option with no meaning for rustcorn; ignored");
    }
    if args.tls.do_handshake_on_connect {
        log_warning!("--do-handshake-on-connect is a no-op: rustcorn always handshakes in the connection's own task");
    }
    // Settings::from_args has checked the files; this only repeats what is worth a warning.
    if let Ok(warnings) = crate::tls::validate_tls_files(&settings) {
        for warning in warnings {
            log_warning!("{warning}");
        }
    }
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

/// Prefixes a settings error with the config file and key when the flag it names came from a file.
pub(crate) fn attribute_to_layer(resolved: &crate::config::layers::Resolved, message: &str) -> String {
    let flag = message
        .split(|c: char| c.is_whitespace() || c == ':')
        .find_map(|word| word.strip_prefix("--"))
        .map(|flag| flag.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-'));
    match flag.and_then(|flag| resolved.source_of_flag(flag).map(|source| (flag, source))) {
        Some((flag, crate::config::layers::Source::File(path))) => {
            format!("config file {}: key `{flag}`: {message}", path.display())
        }
        Some((_, crate::config::layers::Source::EnvCmdArgs)) => {
            format!("{}: {message}", crate::config::layers::CMD_ARGS_ENV)
        }
        _ => message.to_string(),
    }
}
