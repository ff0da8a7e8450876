//! `--bind` values as plain data: `HOST:PORT`, `[V6]:PORT`, `unix:PATH`, `fd://N` (`sys::binds`
//! binds or adopts them).
use std::os::fd::RawFd;
use std::path::PathBuf;

/// One `--bind` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindSpec {
    Tcp(String),
    Unix(PathBuf),
    /// `fd://N`: a listening socket this process inherited open.
    Fd(RawFd),
}

impl BindSpec {
    /// Parses `HOST:PORT`, `[V6]:PORT`, `unix:PATH`, `fd://N`; a bare `HOST` gets port 8000 as in
    /// Gunicorn.
    pub fn parse(text: &str) -> Result<BindSpec, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("expected unix:PATH".into());
            }
            return Ok(BindSpec::Unix(PathBuf::from(path)));
        }
        if let Some(fd) = text.strip_prefix("fd://") {
            return match fd.parse::<RawFd>() {
                Ok(fd) if fd >= 0 => Ok(BindSpec::Fd(fd)),
                _ => Err(format!("{fd:?} is not a file descriptor number; expected fd://N, e.g. fd://3")),
            };
        }
        let with_port = if text.starts_with('[') {
            if text.contains("]:") {
                text.to_string()
            } else {
                format!("{text}:8000")
            }
        } else if text.contains(':') {
            text.to_string()
        } else {
            format!("{text}:8000")
        };
        let (_, port) = with_port.rsplit_once(':').ok_or("expected HOST:PORT")?;
        port.parse::<u16>().map_err(|_| format!("{port:?} is not a port number (0-65535)"))?;
        Ok(BindSpec::Tcp(with_port))
    }
}
