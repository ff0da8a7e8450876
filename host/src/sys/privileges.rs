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
                // Without a passwd entry there is no primary group: never fall back to ours (root's).
                if primary.is_none() && group.is_none() {
                    bail!("--user {text}: uid {uid} has no passwd entry, so it has no primary group; pass --group too");
                }
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

/// In a worker: become `credentials` for good (supplementary groups, then group, then user),
/// then check that real, effective and saved ids all changed and root cannot be regained.
pub fn drop_to(credentials: Credentials) -> Result<()> {
    nix::unistd::setgroups(&[credentials.gid]).context("setgroups failed")?;
    nix::unistd::setgid(credentials.gid).with_context(|| format!("setgid({}) failed", credentials.gid))?;
    nix::unistd::setuid(credentials.uid).with_context(|| format!("setuid({}) failed", credentials.uid))?;
    let uids = nix::unistd::getresuid().context("getresuid failed")?;
    let gids = nix::unistd::getresgid().context("getresgid failed")?;
    let uids = [uids.real, uids.effective, uids.saved].map(Uid::as_raw);
    let gids = [gids.real, gids.effective, gids.saved].map(Gid::as_raw);
    if let Some(problem) = drop_problem(credentials, uids, gids) {
        bail!("{problem}");
    }
    if !credentials.uid.is_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        bail!("dropped to uid {} but setuid(0) still succeeds", credentials.uid);
    }
    Ok(())
}

/// Why the ids after a drop (real, effective, saved) are not exactly `target`; None if they are.
pub fn drop_problem(target: Credentials, uids: [u32; 3], gids: [u32; 3]) -> Option<String> {
    let (uid, gid) = (target.uid.as_raw(), target.gid.as_raw());
    if uids.iter().any(|&u| u != uid) {
        return Some(format!("after dropping to uid {uid}, real/effective/saved uids are {uids:?}"));
    }
    if gids.iter().any(|&g| g != gid) {
        return Some(format!("after dropping to gid {gid}, real/effective/saved gids are {gids:?}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numeric_uid_without_passwd_entry_needs_a_group() {
        let e = resolve(Some("54321"), None).unwrap_err().to_string();
        assert!(e.contains("--user 54321") && e.contains("pass --group"), "{e}");
    }

    #[test]
    fn a_drop_is_complete_only_when_all_three_ids_changed() {
        let target = Credentials { uid: Uid::from_raw(65534), gid: Gid::from_raw(65534) };
        assert_eq!(drop_problem(target, [65534; 3], [65534; 3]), None);
        assert!(drop_problem(target, [65534, 65534, 0], [65534; 3]).unwrap().contains("uids are [65534, 65534, 0]"));
        assert!(drop_problem(target, [65534; 3], [0, 65534, 65534]).is_some());
    }
}
