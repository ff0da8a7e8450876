//! `-u/--user` and `-g/--group`: resolved by the arbiter at startup (which keeps its own
//! privileges, to re-bind and to read root-only files on reload); each worker switches to them
//! after it has mapped the app and opened its sockets and logs, before it serves a request.
use anyhow::{bail, Context, Result};
use nix::unistd::{Gid, Group, Uid, User};
use std::fmt;

/// The identity workers run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub uid: Uid,
    pub gid: Gid,
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = User::from_uid(self.uid).ok().flatten().map(|u| u.name);
        let group = Group::from_gid(self.gid).ok().flatten().map(|g| g.name);
        write!(
            f,
            "user {} (uid {}), group {} (gid {})",
            user.as_deref().unwrap_or("?"),
            self.uid,
            group.as_deref().unwrap_or("?"),
            self.gid
        )
    }
}

/// Resolves `--user NAME|UID` and `--group NAME|GID`. Without `--group`, a named user's primary
/// group. Returns None when neither is given, or they name the identity we already have.
pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Credentials>> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let (uid, primary_gid) = match user {
        None => (Uid::effective(), None),
        Some(text) => match text.parse::<u32>() {
            Ok(uid) => {
                let uid = Uid::from_raw(uid);
                let primary = User::from_uid(uid).ok().flatten().map(|u| u.gid);
                (uid, primary)
            }
            Err(_) => {
                let found =
                    User::from_name(text).with_context(|| format!("--user {text}: cannot read the user database"))?;
                let Some(found) = found else { bail!("--user {text}: no such user") };
                (found.uid, Some(found.gid))
            }
        },
    };
    let gid = match group {
        None => primary_gid.unwrap_or_else(Gid::effective),
        Some(text) => match text.parse::<u32>() {
            Ok(gid) => Gid::from_raw(gid),
            Err(_) => {
                let found = Group::from_name(text)
                    .with_context(|| format!("--group {text}: cannot read the group database"))?;
                let Some(found) = found else { bail!("--group {text}: no such group") };
                found.gid
            }
        },
    };
    let credentials = Credentials { uid, gid };
    if uid == Uid::effective() && gid == Gid::effective() {
        return Ok(None);
    }
    if !Uid::effective().is_root() {
        bail!("--user/--group: switching to {credentials} needs root (rustcorn runs as uid {})", Uid::effective());
    }
    Ok(Some(credentials))
}

/// In a worker: become `credentials` for good (supplementary groups, then group, then user).
pub fn drop_to(credentials: Credentials) -> Result<()> {
    nix::unistd::setgroups(&[credentials.gid]).context("setgroups failed")?;
    nix::unistd::setgid(credentials.gid).with_context(|| format!("setgid({}) failed", credentials.gid))?;
    nix::unistd::setuid(credentials.uid).with_context(|| format!("setuid({}) failed", credentials.uid))?;
    Ok(())
}
