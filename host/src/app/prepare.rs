//! The app: validating a component, compiling it once into an on-disk `.cwasm` cache (keyed by
//! the wasm's SHA-256 and the engine's compatibility hash, each entry with a SHA-256 sidecar of
//! the compiled bytes), and the loading helpers the `compile` / `check` commands use. The arbiter
//! never touches wasmtime itself: `prepare` runs in a short-lived forked child, which checks the compiled file's digest on
//! an open fd, validates it, and passes that fd to the arbiter; every worker maps that same file.
use crate::app::trust::{self, Owner, Sha256Hex};
use crate::app::world::{AppPre, World};
use crate::app::{engine, handoff};
use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

/// A validated, digest-checked compiled app, held open. Workers inherit the open file through
/// fork and map it (`load`): no path is looked up again after the check, and every worker maps
/// the same file, so its code pages are shared through the page cache.
#[derive(Debug, Clone)]
pub struct PreparedApp {
    /// Where the compiled code came from (for messages only).
    pub compiled: PathBuf,
    /// SHA-256 of the compiled bytes, checked on the open file.
    pub sha256: Sha256Hex,
    file: Arc<File>,
}

impl PreparedApp {
    /// Maps the verified file into `engine` (through `/proc/self/fd`, i.e. the same inode).
    pub fn load(&self, engine: &Engine) -> Result<Component> {
        // SAFETY: the file was produced by rustcorn's compiler for this engine configuration (or
        // passed explicitly as precompiled, owned by us or root and not shared-writable) and its
        // digest was checked on this very open file; wasmtime checks the compatibility header.
        unsafe { load_open_file(engine, &self.file) }
            .with_context(|| format!("cannot load {}", self.compiled.display()))
    }

    /// The open file's descriptor, which a forked worker keeps.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

/// SAFETY: the caller vouches that `file` holds trusted compiled code.
unsafe fn load_open_file(engine: &Engine, file: &File) -> Result<Component> {
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    // SAFETY: forwarded to the caller.
    unsafe { Component::deserialize_file(engine, path) }.map_err(anyhow::Error::from)
}

pub(crate) const ELF_MAGIC: &[u8] = b"\x7fELF";
const DIGEST_SUFFIX: &str = ".sha256";

/// What the compiler child produced: where, and the SHA-256 of the compiled bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiled {
    /// An entry of the cache directory (file name inside it).
    Cached { dir: PathBuf, name: String, sha256: Sha256Hex },
    /// A `.cwasm` the user passed.
    Given { path: PathBuf, sha256: Sha256Hex },
}

impl Compiled {
    fn encode(&self) -> String {
        match self {
            Compiled::Cached { dir, name, sha256 } => format!("cached\n{sha256}\n{name}\n{}", dir.display()),
            Compiled::Given { path, sha256 } => format!("given\n{sha256}\n{}", path.display()),
        }
    }

    fn decode(text: &str) -> Option<Compiled> {
        let mut parts = text.splitn(4, '\n');
        let kind = parts.next()?;
        let sha256 = trust::parse_digest(parts.next()?)?;
        match kind {
            "cached" => {
                Some(Compiled::Cached { name: parts.next()?.to_string(), dir: PathBuf::from(parts.next()?), sha256 })
            }
            "given" => Some(Compiled::Given { path: PathBuf::from(parts.next()?), sha256 }),
            _ => None,
        }
    }

    /// In the arbiter: takes the open file the compiler child validated and hashed, re-checks
    /// on it who can write it, and keeps it for the workers.
    fn into_prepared(self, file: File) -> Result<PreparedApp> {
        let (path, sha256, allowed) = match self {
            Compiled::Cached { dir, name, sha256 } => (dir.join(name), sha256, Owner::Us),
            Compiled::Given { path, sha256 } => (path, sha256, Owner::UsOrRoot),
        };
        trust::check_open_file(&file, &path, allowed)?;
        Ok(PreparedApp { compiled: path, sha256, file: Arc::new(out_of_the_way(file)) })
    }
}

/// Moves a long-lived fd above the low numbers that systemd's `LISTEN_FDS` (3, 4, ...) and
/// `fd://N` name, so a socket count that is too high finds a closed fd, not our compiled app.
fn out_of_the_way(file: File) -> File {
    const FIRST_FREE_ABOVE: libc::c_int = 64;
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd (or -1) and leaves `file` untouched.
    let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, FIRST_FREE_ABOVE) };
    if fd < 0 {
        return file;
    }
    // SAFETY: fcntl just returned this new fd; only this File owns it.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}

/// Validates and compiles `app` (or reuses the cache) in a forked child, so no compiler thread
/// is ever alive in the arbiter, and waits for it. The child hands back the very open file it
/// checked (digest, owner, mode) and validated; the arbiter keeps it for the workers. Errors are
/// one line.
pub fn prepare(app: &Path, cache_dir: &Path) -> Result<PreparedApp> {
    let compiler = Compiler::start(app, cache_dir)?;
    let answer = handoff::receive(&compiler.socket);
    let _ = nix::sys::wait::waitpid(compiler.pid, None);
    compiler.answer(answer)
}

/// A compiler child at work: the arbiter polls `fd()` and calls `try_answer` when it is readable,
/// so a reload's compile never stops the arbiter's loop.
pub struct Compiler {
    pid: nix::unistd::Pid,
    socket: OwnedFd,
    app: PathBuf,
}

impl Compiler {
    /// Forks the compiler child for `app`.
    pub fn start(app: &Path, cache_dir: &Path) -> Result<Compiler> {
        let (child_end, parent_end) = handoff::pair()?;
        // SAFETY: the arbiter is single-threaded here; the child only compiles and calls _exit.
        match unsafe { crate::sys::signals::fork() }.context("cannot fork the compiler")? {
            crate::sys::signals::Forked::Child(blocked) => {
                drop(parent_end);
                blocked.reset();
                // The compiler needs nothing of the arbiter's (sockets, pipes): its answer socket and the logs.
                let _ = crate::sys::fds::keep_only(&[vec![child_end.as_raw_fd()], crate::log::held_fds()].concat());
                let _ = match prepare_in_process(app, cache_dir) {
                    Ok((compiled, file)) => {
                        handoff::send(&child_end, &format!("ok\n{}", compiled.encode()), Some(file.as_raw_fd()))
                    }
                    Err(e) => handoff::send(&child_end, &format!("err\n{e:#}"), None),
                };
                // SAFETY: leave without running the parent's atexit handlers or destructors.
                unsafe { libc::_exit(0) }
            }
            crate::sys::signals::Forked::Parent(child) => {
                drop(child_end);
                Ok(Compiler { pid: child, socket: parent_end, app: app.to_path_buf() })
            }
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        self.pid
    }

    /// The answer, once the socket is readable (the child sent it, or ended without one).
    pub fn try_answer(&self) -> Option<Result<PreparedApp>> {
        let mut fds = [nix::poll::PollFd::new(self.socket.as_fd(), nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            Ok(0) => None,
            _ => Some(self.answer(handoff::receive(&self.socket))),
        }
    }

    fn answer(&self, received: Result<(String, Option<OwnedFd>)>) -> Result<PreparedApp> {
        let (output, file) = received?;
        if let Some(answer) = output.strip_prefix("ok\n") {
            let compiled = Compiled::decode(answer).context("the compiler's answer is malformed")?;
            let file = file.context("the compiler did not pass the compiled file")?;
            return compiled.into_prepared(File::from(file));
        }
        if let Some(message) = output.strip_prefix("err\n") {
            bail!("{message}");
        }
        bail!("compiling {} failed: the compiler process ended without an answer", self.app.display())
    }
}

/// Reads, validates and compiles (or finds in the cache) an app in this process. Returns where
/// the compiled code is and the open file it was checked and validated on.
pub fn prepare_in_process(app: &Path, cache_dir: &Path) -> Result<(Compiled, File)> {
    let (app_file, bytes) = read_app_file(app)?;
    if bytes.starts_with(ELF_MAGIC) {
        let (engine, component, world) = load_precompiled_any(app, &bytes)?;
        validate_proxy(&engine, &component, app, world)?;
        let path = std::fs::canonicalize(app).unwrap_or_else(|_| app.to_path_buf());
        return Ok((Compiled::Given { path, sha256: trust::sha256_bytes(&bytes) }, app_file));
    }
    ensure_component(app, &bytes)?;
    let world = World::of_component(&bytes);
    let engine = engine::engine(None, true, world)?;
    let dir = trust::open_private_dir(cache_dir)?;
    let name = cache_name(&engine, &bytes);
    if let Some((sha256, component, file)) = cached_entry(&engine, &dir, cache_dir, &name)? {
        validate_proxy(&engine, &component, app, world)?;
        crate::log_info!("using the compiled app from the cache: {}", cache_dir.join(&name).display());
        return Ok((Compiled::Cached { dir: cache_dir.to_path_buf(), name, sha256 }, file));
    }
    let compile_started = std::time::Instant::now();
    let compiled = engine
        .precompile_component(&bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile {}", app.display()))?;
    // SAFETY: these bytes were just produced by this engine.
    let component = unsafe { Component::deserialize(&engine, &compiled) }?;
    validate_proxy(&engine, &component, app, world)?;
    let sha256 = trust::sha256_bytes(&compiled);
    write_entry(cache_dir, &name, &compiled, &sha256)
        .with_context(|| format!("cannot write the compiled app to --cache-dir {}", cache_dir.display()))?;
    crate::log_info!(
        "compiled {} in {} ms; cached at {}",
        app.display(),
        compile_started.elapsed().as_millis(),
        cache_dir.join(&name).display()
    );
    // Hand over the file as written, checked like any cache entry.
    let file = trust::open_in_dir(&dir, cache_dir, &name)?.context("the compiled app vanished from --cache-dir")?;
    if trust::sha256_file(&file)? != sha256 {
        bail!("{} changed while it was being written; refusing it", cache_dir.join(&name).display());
    }
    Ok((Compiled::Cached { dir: cache_dir.to_path_buf(), name, sha256 }, file))
}

/// A usable cache entry: its digest sidecar matches its bytes, and it loads. A digest mismatch
/// (a corrupted or tampered file) is never deserialized: the caller recompiles over it.
fn cached_entry(
    engine: &Engine,
    dir: &File,
    dir_path: &Path,
    name: &str,
) -> Result<Option<(Sha256Hex, Component, File)>> {
    let Some(file) = trust::open_in_dir(dir, dir_path, name)? else {
        return Ok(None);
    };
    let recorded = match trust::open_in_dir(dir, dir_path, &format!("{name}{DIGEST_SUFFIX}"))? {
        Some(mut sidecar) => {
            let mut text = String::new();
            sidecar.read_to_string(&mut text).ok().and_then(|_| trust::parse_digest(&text))
        }
        None => None,
    };
    let Some(recorded) = recorded else {
        crate::log_info!(
            "{}: no recorded SHA-256 (an older rustcorn wrote it); recompiling",
            dir_path.join(name).display()
        );
        return Ok(None);
    };
    let actual = trust::sha256_file(&file)?;
    if recorded != actual {
        crate::log_warning!(
            "{}: the compiled app does not match its recorded SHA-256 (corrupted or tampered with); not loading it, recompiling",
            dir_path.join(name).display()
        );
        return Ok(None);
    }
    // SAFETY: rustcorn wrote this file (its digest matches the sidecar written with it, both in
    // our private cache directory) for this engine configuration.
    match unsafe { load_open_file(engine, &file) } {
        Ok(component) => Ok(Some((actual, component, file))),
        Err(_) => Ok(None),
    }
}

/// Reads an app. A precompiled (`ELF`) one is checked on the open file: only its owner (us or
/// root) may be able to write it, since its bytes run as native code.
pub(crate) fn read_app(app: &Path) -> Result<Vec<u8>> {
    read_app_file(app).map(|(_, bytes)| bytes)
}

/// `read_app`, also returning the open file the bytes came from.
fn read_app_file(app: &Path) -> Result<(File, Vec<u8>)> {
    let mut file = File::open(app).map_err(|e| anyhow!("cannot read app {}: {e}", app.display()))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| anyhow!("cannot read app {}: {e}", app.display()))?;
    if bytes.starts_with(ELF_MAGIC) {
        trust::check_open_file(&file, app, Owner::UsOrRoot)
            .context("a .cwasm is native code: it must come from a trusted build, writable only by its owner")?;
    }
    Ok((file, bytes))
}

pub(crate) fn ensure_component(app: &Path, bytes: &[u8]) -> Result<()> {
    if !bytes.starts_with(b"\0asm") {
        bail!(
            "{} is not a WebAssembly component (no \\0asm header); pass a wasi:http component built for wasm32-wasip2",
            app.display()
        );
    }
    // The preamble's layer field (bytes 6..8) is 0 for core modules and 1 for components.
    if bytes.get(6..8) != Some(&[1, 0]) {
        bail!(
            "{} is a core WebAssembly module, not a component; build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)",
            app.display()
        );
    }
    Ok(())
}

/// A precompiled app with the engine (and so the world) it was compiled for: its bytes do not say
/// which, so each world's engine is tried; the error, if none loads it, is the 0.2 engine's.
pub(crate) fn load_precompiled_any(app: &Path, bytes: &[u8]) -> Result<(Engine, Component, World)> {
    let mut first_error = None;
    for world in World::ALL {
        let engine = engine::engine(None, true, world)?;
        match load_precompiled(&engine, app, bytes) {
            Ok(component) => return Ok((engine, component, world)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| anyhow!("{} cannot be loaded", app.display())))
}

pub(crate) fn load_precompiled(engine: &Engine, app: &Path, bytes: &[u8]) -> Result<Component> {
    match Engine::detect_precompiled(bytes) {
        Some(Precompiled::Component) => {}
        Some(Precompiled::Module) => bail!("{} is a precompiled core module, not a component", app.display()),
        None => bail!("{} is neither a WebAssembly component nor a file made by `rustcorn compile`", app.display()),
    }
    // SAFETY: the user passed this file explicitly as a precompiled app, and `read_app` checked
    // that only its owner (us or root) can write it; wasmtime checks that it was compiled by a
    // compatible engine before using it (its refusal becomes one line: which mismatch, how to rebuild).
    unsafe { Component::deserialize(engine, bytes) }
        .map_err(|e| anyhow!("{}", crate::app::compat::explain(app, &format!("{:#}", anyhow::Error::from(e)))))
}

/// Checks that every import is one the host provides and that the app exports a wasi:http
/// handler (0.2 or 0.3); returns the world it serves.
pub(crate) fn validate_proxy(engine: &Engine, component: &Component, app: &Path, world: World) -> Result<World> {
    let linker = engine::linker::<engine::LinkCheck>(engine, world)?;
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| anyhow!("{} imports something rustcorn does not provide: {e}", app.display()))?;
    Ok(AppPre::new(pre, app)?.world())
}

fn cache_name(engine: &Engine, bytes: &[u8]) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    format!("{}-{:016x}.cwasm", trust::sha256_bytes(bytes), hasher.finish())
}

/// Writes the compiled bytes, then their digest sidecar, each through a private (0600) temporary
/// file in the cache directory and a rename (which replaces, never follows, what was there).
fn write_entry(dir: &Path, name: &str, compiled: &[u8], sha256: &str) -> Result<()> {
    for (file_name, bytes) in [(name.to_string(), compiled), (format!("{name}{DIGEST_SUFFIX}"), sha256.as_bytes())] {
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(dir.join(file_name)).map_err(|e| e.error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiler_answers_round_trip() {
        let sha256 = trust::sha256_bytes(b"x");
        for compiled in [
            Compiled::Cached { dir: "/var/cache/rustcorn".into(), name: "a.cwasm".into(), sha256: sha256.clone() },
            Compiled::Given { path: "/srv/app.cwasm".into(), sha256 },
        ] {
            assert_eq!(Compiled::decode(&compiled.encode()), Some(compiled));
        }
        assert_eq!(Compiled::decode("cached\nnot-a-digest\na\n/b"), None);
    }
}
