//! What one generation of workers runs with (settings, compiled app, listening sockets, the
//! process settings `--chdir`/`--umask`), and how a reload derives the next generation's sockets
//! from the current ones: binds that stay keep their socket, new ones are bound, dropped ones are
//! closed when the generation that used them is released.
use crate::app::prepare::PreparedApp;
use crate::config::cli::ServeArgs;
use crate::config::settings::Settings;
use crate::sys::binds::{self, BindSpec, Listener};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

/// One listening socket and the `--bind` it serves (None for sockets systemd passed).
#[derive(Debug, Clone)]
pub struct Bound {
    pub spec: Option<BindSpec>,
    pub listener: Rc<Listener>,
}

/// `--chdir` and `--umask` as applied to the arbiter (and inherited by the workers it forks).
/// Without `--chdir` the directory is the launch directory; without `--umask` the umask is the
/// one the process inherited. (No setting changes an rlimit: `--worker-connections` only reads
/// RLIMIT_NOFILE.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSettings {
    pub directory: PathBuf,
    pub umask: Option<u32>,
}

/// The umask this process started with, recorded before anything can change it.
static INHERITED_UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// The umask this process inherited. Recorded by the first call, which `ProcessSettings::apply`
/// makes before it sets any umask (at startup, before the first generation's `--umask`).
pub fn inherited_umask() -> u32 {
    *INHERITED_UMASK.get_or_init(|| {
        use nix::sys::stat::{umask, Mode};
        // umask(2) can only be read by setting it: put the value back at once.
        let current = umask(Mode::from_bits_truncate(0o077));
        umask(current);
        current.bits() as u32
    })
}

impl ProcessSettings {
    /// Resolves `--chdir` (relative to `launch_dir`) and `--umask` without applying them.
    pub fn from_args(args: &ServeArgs, launch_dir: &Path) -> Result<ProcessSettings> {
        let directory = match &args.chdir {
            Some(dir) => launch_dir.join(dir),
            None => launch_dir.to_path_buf(),
        };
        let umask = match &args.umask {
            None => None,
            Some(mask) => Some(
                u32::from_str_radix(mask.trim_start_matches("0o"), 8).ok().filter(|bits| *bits <= 0o777).with_context(
                    || format!("--umask {mask:?}: expected an octal mode from 0 to 0777, such as 022 or 0o027"),
                )?,
            ),
        };
        Ok(ProcessSettings { directory, umask })
    }

    /// Sets the umask (this generation's, else the inherited one), then the directory. The umask
    /// is set even when the directory cannot be entered, so restoring a generation's settings
    /// after a failed reload always undoes a rejected `--umask`.
    pub fn apply(&self) -> Result<()> {
        // Recorded first: the first call must see the umask before any `--umask` replaced it.
        let inherited = inherited_umask();
        let bits = self.umask.unwrap_or(inherited);
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(bits as nix::libc::mode_t));
        std::env::set_current_dir(&self.directory)
            .with_context(|| format!("--chdir {}: cannot change to it", self.directory.display()))
    }
}

/// A generation's payload in the supervisor.
pub struct Payload {
    pub settings: Arc<Settings>,
    pub app: PreparedApp,
    pub process: ProcessSettings,
    pub bound: Vec<Bound>,
    /// Unix socket files this generation's binds own (removed when no generation uses them).
    pub socket_files: Vec<PathBuf>,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload").field("app", &self.app).field("bound", &self.bound).finish_non_exhaustive()
    }
}

impl Payload {
    pub fn listeners(&self) -> Vec<&Listener> {
        self.bound.iter().map(|b| b.listener.as_ref()).collect()
    }

    /// The descriptors a worker of this generation is handed: its listening sockets and the
    /// compiled app's open file.
    pub fn worker_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.bound.iter().map(|b| b.listener.raw_fd()).chain([self.app.raw_fd()]).collect()
    }

    /// Where clients reach us, as the readiness line shows it: `http://HOST:PORT unix:PATH ...`
    /// (`https://` for TCP binds when TLS is on).
    pub fn listening_addresses(&self) -> String {
        self.bound.iter().map(|b| self.address_of(&b.listener)).collect::<Vec<_>>().join(" ")
    }

    pub fn address_of(&self, listener: &Listener) -> String {
        display_address(listener, self.settings.tls.is_some())
    }
}

/// The sockets for a reload's `settings`: those of `current` whose bind stays, plus new binds.
/// With `rebindable` false (sockets inherited from an upgrade or systemd) the current ones stay.
/// Nothing is closed here; a failure leaves the current sockets as they were.
pub fn sockets_for_reload(
    current: &Payload,
    settings: &Settings,
    reuse_port: bool,
    rebindable: bool,
) -> Result<(Vec<Bound>, Vec<PathBuf>)> {
    let current_specs: Vec<&BindSpec> = current.bound.iter().filter_map(|b| b.spec.as_ref()).collect();
    let unchanged =
        settings.binds.len() == current_specs.len() && settings.binds.iter().all(|s| current_specs.contains(&s));
    if unchanged || !rebindable {
        if !unchanged {
            crate::log_warning!(
                "reload: --bind changed but the sockets were inherited (upgrade or systemd); keeping them"
            );
        }
        return Ok((current.bound.clone(), current.socket_files.clone()));
    }
    for (i, spec) in settings.binds.iter().enumerate() {
        if settings.binds[..i].contains(spec) {
            anyhow::bail!("--bind {spec:?} is given twice");
        }
    }
    let mut bound = Vec::new();
    for spec in &settings.binds {
        match current.bound.iter().find(|b| b.spec.as_ref() == Some(spec)) {
            Some(kept) => bound.push(kept.clone()),
            None => {
                let listener = binds::bind_all(std::slice::from_ref(spec), settings.backlog, reuse_port)?.remove(0);
                bound.push(Bound { spec: Some(spec.clone()), listener: Rc::new(listener) });
            }
        }
    }
    Ok((bound, unix_socket_files(&settings.binds)))
}

/// The unix socket files that `--bind unix:PATH` values name.
pub fn unix_socket_files(specs: &[BindSpec]) -> Vec<PathBuf> {
    specs
        .iter()
        .filter_map(|spec| match spec {
            BindSpec::Unix(path) => Some(path.clone()),
            _ => None,
        })
        .collect()
}

/// A listener's address as clients use it, `https://` for TCP when TLS is on.
pub fn display_address(listener: &Listener, tls: bool) -> String {
    let address = listener.display_address();
    match address.strip_prefix("http://") {
        Some(host_port) if tls => format!("https://{host_port}"),
        _ => address,
    }
}
