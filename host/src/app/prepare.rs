//! The app: validating a component, compiling it once into an on-disk `.cwasm` cache (keyed by
//! the wasm's SHA-256 and the engine's compatibility hash), and the `compile` / `check` commands.
//! The arbiter never touches wasmtime itself: `prepare` runs in a short-lived forked child.
use crate::app::engine;
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// A validated app ready for workers to map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedApp {
    /// The compiled file workers load with `Component::deserialize_file`.
    pub compiled: PathBuf,
}

pub(crate) const ELF_MAGIC: &[u8] = b"\x7fELF";

/// Validates and compiles `app` (or reuses the cache) in a forked child, so no compiler thread
/// is ever alive in the arbiter, and waits for it. Errors are one readable line.
pub fn prepare(app: &Path, cache_dir: &Path) -> Result<PreparedApp> {
    let mut compiler = Compiler::start(app, cache_dir)?;
    compiler.pipe.set_nonblocking(false).context("cannot read the compiler's answer")?;
    loop {
        if let Some(result) = compiler.read_available() {
            let _ = nix::sys::wait::waitpid(compiler.pid, None);
            return result;
        }
    }
}

/// A compiler child at work: the arbiter polls `fd()` and calls `read_available` until it answers,
/// so a reload's compile never stops the arbiter's loop.
pub struct Compiler {
    pid: nix::unistd::Pid,
    pipe: UnixStream,
    app: PathBuf,
    answer: Vec<u8>,
}

impl Compiler {
    /// Forks the compiler child for `app`.
    pub fn start(app: &Path, cache_dir: &Path) -> Result<Compiler> {
        let (read_end, mut write_end) = UnixStream::pair().context("cannot create a pipe for the compiler")?;
        // SAFETY: the arbiter is single-threaded here; the child only compiles and calls _exit.
        match unsafe { nix::unistd::fork() }.context("cannot fork the compiler")? {
            nix::unistd::ForkResult::Child => {
                drop(read_end);
                crate::sys::signals::reset_in_child();
                let message = match prepare_in_process(app, cache_dir) {
                    Ok(prepared) => format!("ok\n{}", prepared.compiled.display()),
                    Err(e) => format!("err\n{e:#}"),
                };
                let _ = write_end.write_all(message.as_bytes());
                // SAFETY: leave without running the parent's atexit handlers or destructors.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(write_end);
                read_end.set_nonblocking(true).context("cannot read the compiler's answer")?;
                Ok(Compiler { pid: child, pipe: read_end, app: app.to_path_buf(), answer: Vec::new() })
            }
        }
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.pipe.as_fd()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        self.pid
    }

    /// Reads what the child wrote so far; the result once it has closed its end.
    pub fn read_available(&mut self) -> Option<Result<PreparedApp>> {
        let mut buf = [0u8; 4096];
        loop {
            match self.pipe.read(&mut buf) {
                Ok(0) => return Some(self.answer()),
                Ok(n) => self.answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(e) => return Some(Err(anyhow!("cannot read the compiler's answer: {e}"))),
            }
        }
    }

    fn answer(&self) -> Result<PreparedApp> {
        let output = String::from_utf8_lossy(&self.answer);
        if let Some(path) = output.strip_prefix("ok\n") {
            return Ok(PreparedApp { compiled: PathBuf::from(path) });
        }
        if let Some(message) = output.strip_prefix("err\n") {
            bail!("{message}");
        }
        bail!("compiling {} failed: the compiler process ended without an answer", self.app.display())
    }
}

/// Reads, validates and compiles (or finds in the cache) an app in this process.
pub fn prepare_in_process(app: &Path, cache_dir: &Path) -> Result<PreparedApp> {
    let bytes = read_app(app)?;
    let engine = engine::engine(None, true)?;
    if bytes.starts_with(ELF_MAGIC) {
        let component = load_precompiled(&engine, app, &bytes)?;
        validate_proxy(&engine, &component, app)?;
        let compiled = std::fs::canonicalize(app).unwrap_or_else(|_| app.to_path_buf());
        return Ok(PreparedApp { compiled });
    }
    ensure_component(app, &bytes)?;
    let cached = cache_path(&engine, cache_dir, &bytes);
    if cached.exists() {
        // SAFETY: files in the cache are written only by rustcorn, atomically, for this engine.
        if let Ok(component) = unsafe { Component::deserialize_file(&engine, &cached) } {
            validate_proxy(&engine, &component, app)?;
            crate::log_info!("using the compiled app from the cache: {}", cached.display());
            return Ok(PreparedApp { compiled: cached });
        }
    }
    let compile_started = std::time::Instant::now();
    let compiled = engine
        .precompile_component(&bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile {}", app.display()))?;
    // SAFETY: these bytes were just produced by this engine.
    let component = unsafe { Component::deserialize(&engine, &compiled) }?;
    validate_proxy(&engine, &component, app)?;
    write_atomically(&cached, &compiled)
        .with_context(|| format!("cannot write the compiled app to --cache-dir {}", cache_dir.display()))?;
    crate::log_info!(
        "compiled {} in {} ms; cached at {}",
        app.display(),
        compile_started.elapsed().as_millis(),
        cached.display()
    );
    Ok(PreparedApp { compiled: cached })
}

pub(crate) fn read_app(app: &Path) -> Result<Vec<u8>> {
    std::fs::read(app).map_err(|e| anyhow!("cannot read app {}: {e}", app.display()))
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

pub(crate) fn load_precompiled(engine: &Engine, app: &Path, bytes: &[u8]) -> Result<Component> {
    match Engine::detect_precompiled(bytes) {
        Some(Precompiled::Component) => {}
        Some(Precompiled::Module) => bail!("{} is a precompiled core module, not a component", app.display()),
        None => bail!("{} is neither a WebAssembly component nor a file made by `rustcorn compile`", app.display()),
    }
    // SAFETY: the user passed this file explicitly as a precompiled app; wasmtime checks that it
    // was compiled by a compatible engine before using it.
    unsafe { Component::deserialize_file(engine, app) }
        .map_err(|e| anyhow!("{}", crate::app::compat::explain(app, &format!("{:#}", anyhow::Error::from(e)))))
}

/// Checks that every import is one the host provides and that the app exports the handler.
pub(crate) fn validate_proxy(engine: &Engine, component: &Component, app: &Path) -> Result<()> {
    let linker = engine::linker(engine)?;
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| anyhow!("{} imports something rustcorn does not provide: {e}", app.display()))?;
    ProxyPre::new(pre).map_err(|e| {
        anyhow!(
            "{} is not a wasi:http/proxy component: it must export wasi:http/incoming-handler@0.2.x ({e})",
            app.display()
        )
    })?;
    Ok(())
}

fn cache_path(engine: &Engine, cache_dir: &Path, bytes: &[u8]) -> PathBuf {
    let digest = Sha256::digest(bytes);
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    cache_dir.join(format!("{hex}-{:016x}.cwasm", hasher.finish()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("cache path has no directory")?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
