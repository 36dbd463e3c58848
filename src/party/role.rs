//! Roles: what each kind of caller may do.

use serde::{Deserialize, Serialize};

/// What someone may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The streamer.
    Host,
    /// Holds a moderator link.
    Moderator,
    /// Anyone else.
    Viewer,
}

impl Role {
    /// The role's name, as in its JSON and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Moderator => "moderator",
            Role::Viewer => "viewer",
        }
    }

    /// Whether this role may do what `needed` may: the host all a moderator may, a
    /// moderator all a viewer may.
    pub fn at_least(self, needed: Role) -> bool {
        self.rank() >= needed.rank()
    }

    /// Whether this role may act on the chat (delete, ban, change modes…).
    pub fn may_moderate(self) -> bool {
        self.at_least(Role::Moderator)
    }

    fn rank(self) -> u8 {
        match self {
            Role::Host => 2,
            Role::Moderator => 1,
            Role::Viewer => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_may_do_all_a_moderator_may() {
        assert!(Role::Host.at_least(Role::Moderator));
        assert!(Role::Moderator.at_least(Role::Moderator));
        assert!(!Role::Viewer.at_least(Role::Moderator));
        assert!(!Role::Moderator.at_least(Role::Host));
        assert!(!Role::Viewer.may_moderate());
        assert_eq!(
            serde_json::to_string(&Role::Moderator).unwrap(),
            "\"moderator\""
        );
    }
}
