//! Preparing a reload (HUP, `--reload`) without stopping the arbiter's loop: the settings are
//! resolved again from the launch directory (config file, `RUSTCORN_CMD_ARGS`, the original
//! command line), then the app is compiled in a child whose answer the loop polls for. Until the
//! new generation is committed, the process keeps the serving generation's `--chdir`/`--umask`
//! (or the inherited umask when it set none): every step that changes them restores them.
use super::generation::{sockets_for_reload, Payload, ProcessSettings};
use crate::app::prepare::{Compiler, PreparedApp};
use crate::config::cli::ServeArgs;
use crate::config::layers::attribute_to_layer;
use crate::config::settings::Settings;
use anyhow::Result;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

/// A reload whose app is being compiled.
pub struct PendingReload {
    args: ServeArgs,
    settings: Settings,
    process: ProcessSettings,
    compiler: Compiler,
}

/// Where the settings come from, as at startup.
pub struct Origin<'a> {
    pub launch_dir: &'a Path,
    pub serve_args: &'a [OsString],
}

impl PendingReload {
    /// Resolves the settings again and starts the compiler. `serving` is the process settings of
    /// the serving generation, restored before this returns whatever happens.
    pub fn start(origin: &Origin<'_>, serving: &ProcessSettings) -> Result<PendingReload, String> {
        let resolved = resolve(origin);
        restore(serving);
        let (args, mut settings, process) = resolved?;
        // Paths are used from the serving generation's directory until the new one is committed.
        settings.app = process.directory.join(&settings.app);
        settings.cache_dir = process.directory.join(&settings.cache_dir);
        let compiler = Compiler::start(&settings.app, &settings.cache_dir).map_err(|e| format!("{e:#}"))?;
        Ok(PendingReload { args, settings, process, compiler })
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.compiler.fd()
    }

    /// The compiler's pid (killed when the reload is cancelled).
    pub fn compiler_pid(&self) -> nix::unistd::Pid {
        self.compiler.pid()
    }

    /// Reads the compiler's answer; Some once it is complete.
    pub fn poll(&mut self) -> Option<Result<PreparedApp, String>> {
        Some(self.compiler.try_answer()?.map_err(|e| format!("{e:#}")))
    }

    /// The new generation's payload, with its sockets derived from `current`'s. New sockets are
    /// bound as at startup, in the new generation's directory and with its umask; the serving
    /// generation's are back in force when this returns, whatever happens.
    pub fn finish(self, app: PreparedApp, current: &Payload, rebindable: bool) -> Result<Payload, String> {
        let reuse_port = self.args.ops.reuse_port;
        let sockets =
            self.process.apply().and_then(|()| sockets_for_reload(current, &self.settings, reuse_port, rebindable));
        restore(&current.process);
        let (bound, socket_files) = sockets.map_err(|e| format!("{e:#}"))?;
        let payload = Payload { settings: Arc::new(self.settings), app, process: self.process, bound, socket_files };
        let addresses = payload.listening_addresses();
        if addresses != current.listening_addresses() {
            crate::log_info!("reload: now listening at {addresses}");
        }
        Ok(payload)
    }
}

/// Puts the serving generation's directory and umask back (after a reload step that changed them).
fn restore(serving: &ProcessSettings) {
    if let Err(e) = serving.apply() {
        crate::log_error!("reload: cannot restore the serving generation's directory: {e:#}");
    }
}

/// The whole settings resolution, from the launch directory; leaves the process in the new
/// `--chdir` (the caller restores the serving one).
fn resolve(origin: &Origin<'_>) -> Result<(ServeArgs, Settings, ProcessSettings), String> {
    std::env::set_current_dir(origin.launch_dir).map_err(|e| {
        format!("cannot change to the launch directory {} to read the settings: {e}", origin.launch_dir.display())
    })?;
    let resolved = crate::config::layers::resolve(origin.serve_args).map_err(|e| e.to_string())?;
    let process = ProcessSettings::from_args(&resolved.args, origin.launch_dir).map_err(|e| format!("{e:#}"))?;
    process.apply().map_err(|e| format!("{e:#}"))?;
    let settings = Settings::from_args(&resolved.args).map_err(|e| attribute_to_layer(&resolved, &e.to_string()))?;
    if let Some(tls) = &settings.tls {
        crate::tls::validate_tls_files(tls, settings.protocols(true))
            .map_err(|e| attribute_to_layer(&resolved, &format!("{e:#}")))?;
    }
    Ok((resolved.args, settings, process))
}
