//! Where a folder stands, worked out in one place: [`Phase::of`] turns the task's flags
//! into one value that both the step (may it scan, may it exchange with the server) and
//! the status (the [`FolderState`] shown) read. Pure, so every combination of its inputs
//! is tested below.

use filesync_proto::control::FolderState;

/// The task's flags that decide its phase, each as a yes or no.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Inputs {
    /// The user paused the folder.
    pub paused: bool,
    /// `.filesyncignore` does not parse.
    pub rules_broken: bool,
    /// The folder's directory is gone, or its marker is missing.
    pub away: bool,
    /// A full scan has run since start-up.
    pub scanned: bool,
    /// The mass-delete guard holds deletes back.
    pub held: bool,
    /// A session is connected.
    pub connected: bool,
    /// The session has read the server's index up to its present.
    pub caught_up: bool,
    /// Something is left to send, fetch or scan, or the loop goes straight on to more.
    /// It only tells syncing from idle, which exchange alike: the step, which cannot
    /// know it before its rounds ran, may pass either.
    pub work_left: bool,
}

/// What the folder is doing, by the first that holds, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Paused by the user: nothing is exchanged. Scans go on unless the rules are
    /// broken, so that resuming sends what changed meanwhile.
    Paused { rules_broken: bool },
    /// The rule file does not parse: nothing is scanned or exchanged, and only a fixed
    /// rule file from the server is taken in. Syncing without the user's rules could
    /// spread files they meant to keep here.
    BrokenRules,
    /// The directory is gone or is not the folder: scans go on, since they are what
    /// notices it is back, but nothing is exchanged.
    Away,
    /// No scan has finished yet. `linked` (connected and caught up) still exchanges, as
    /// the step always has: it scans first, and a scan that failed without finding the
    /// folder away does not stop the exchange.
    Scanning { linked: bool },
    /// The mass-delete guard holds deletes back; the rest still goes both ways when
    /// `linked`, and the guard keeps the deletes out of the push.
    Held { linked: bool },
    /// No session.
    Offline,
    /// Connected, and reading the server's index up to its present before acting on it.
    CatchingUp,
    /// Connected and caught up, with work left.
    Syncing,
    /// Connected and caught up, with nothing left to do.
    Idle,
}

impl Phase {
    /// The one place a folder's phase is decided. The order is the status's (paused
    /// first), which is where the two old lists disagreed: the step let broken rules
    /// stop a paused folder's scans, so `Paused` carries that.
    pub(super) fn of(i: Inputs) -> Phase {
        let linked = i.connected && i.caught_up;
        if i.paused {
            Phase::Paused {
                rules_broken: i.rules_broken,
            }
        } else if i.rules_broken {
            Phase::BrokenRules
        } else if i.away {
            Phase::Away
        } else if !i.scanned {
            Phase::Scanning { linked }
        } else if i.held {
            Phase::Held { linked }
        } else if !i.connected {
            Phase::Offline
        } else if !i.caught_up {
            Phase::CatchingUp
        } else if i.work_left {
            Phase::Syncing
        } else {
            Phase::Idle
        }
    }

    /// Whether the step may scan what changed.
    pub(super) fn may_scan(self) -> bool {
        !matches!(
            self,
            Phase::Paused { rules_broken: true } | Phase::BrokenRules
        )
    }

    /// Whether the step may apply what the server has and send what it lacks.
    pub(super) fn may_exchange(self) -> bool {
        match self {
            Phase::Scanning { linked } | Phase::Held { linked } => linked,
            Phase::Syncing | Phase::Idle => true,
            Phase::Paused { .. }
            | Phase::BrokenRules
            | Phase::Away
            | Phase::Offline
            | Phase::CatchingUp => false,
        }
    }

    /// The state status shows.
    pub(super) fn state(self) -> FolderState {
        match self {
            Phase::Paused { .. } => FolderState::Paused,
            Phase::BrokenRules | Phase::Away => FolderState::Error,
            Phase::Scanning { .. } => FolderState::Scanning,
            Phase::Held { .. } => FolderState::Held,
            Phase::Offline => FolderState::Offline,
            Phase::CatchingUp | Phase::Syncing => FolderState::Syncing,
            Phase::Idle => FolderState::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a phase means to the step and to status.
    #[derive(Debug, PartialEq, Eq)]
    struct Seen {
        scan: bool,
        exchange: bool,
        state: FolderState,
    }

    fn check(i: Inputs, expected: Seen) {
        let phase = Phase::of(i);
        let seen = Seen {
            scan: phase.may_scan(),
            exchange: phase.may_exchange(),
            state: phase.state(),
        };
        assert_eq!(seen, expected, "{i:?} is {phase:?}");
    }

    fn inputs(bits: u32) -> Inputs {
        let bit = |n: u32| bits & (1 << n) != 0;
        Inputs {
            paused: bit(0),
            rules_broken: bit(1),
            away: bit(2),
            scanned: bit(3),
            held: bit(4),
            connected: bit(5),
            caught_up: bit(6),
            work_left: bit(7),
        }
    }

    /// The two lists the task kept by hand before there was a phase: the step's gates
    /// and the status's chain. Every combination must still read the same.
    fn old_lists(i: Inputs) -> Seen {
        let state = if i.paused {
            FolderState::Paused
        } else if i.rules_broken || i.away {
            FolderState::Error
        } else if !i.scanned {
            FolderState::Scanning
        } else if i.held {
            FolderState::Held
        } else if !i.connected {
            FolderState::Offline
        } else if i.work_left || !i.caught_up {
            FolderState::Syncing
        } else {
            FolderState::Idle
        };
        Seen {
            scan: !i.rules_broken,
            exchange: !i.rules_broken && !i.away && !i.paused && i.connected && i.caught_up,
            state,
        }
    }

    #[test]
    fn every_combination_reads_as_the_old_lists_did() {
        for bits in 0..(1 << 8) {
            let i = inputs(bits);
            check(i, old_lists(i));
        }
    }

    #[test]
    fn work_left_changes_only_syncing_and_idle() {
        for bits in 0..(1 << 7) {
            let (idle, busy) = (Phase::of(inputs(bits)), Phase::of(inputs(bits | 1 << 7)));
            assert_eq!(idle.may_scan(), busy.may_scan());
            assert_eq!(idle.may_exchange(), busy.may_exchange());
            if idle != busy {
                assert_eq!((idle, busy), (Phase::Idle, Phase::Syncing));
            }
        }
    }

    #[test]
    fn phases() {
        let ready = Inputs {
            paused: false,
            rules_broken: false,
            away: false,
            scanned: true,
            held: false,
            connected: true,
            caught_up: true,
            work_left: false,
        };
        let seen = |scan, exchange, state| Seen {
            scan,
            exchange,
            state,
        };
        check(ready, seen(true, true, FolderState::Idle));
        let busy = Inputs {
            work_left: true,
            ..ready
        };
        check(busy, seen(true, true, FolderState::Syncing));
        let paused = Inputs {
            paused: true,
            ..ready
        };
        check(paused, seen(true, false, FolderState::Paused));
        let paused_broken = Inputs {
            rules_broken: true,
            ..paused
        };
        check(paused_broken, seen(false, false, FolderState::Paused));
        let broken = Inputs {
            rules_broken: true,
            ..ready
        };
        check(broken, seen(false, false, FolderState::Error));
        let away = Inputs {
            away: true,
            ..ready
        };
        check(away, seen(true, false, FolderState::Error));
        let first_scan = Inputs {
            scanned: false,
            ..ready
        };
        check(first_scan, seen(true, true, FolderState::Scanning));
        let first_scan_offline = Inputs {
            connected: false,
            ..first_scan
        };
        check(first_scan_offline, seen(true, false, FolderState::Scanning));
        let held = Inputs {
            held: true,
            ..ready
        };
        check(held, seen(true, true, FolderState::Held));
        let held_offline = Inputs {
            connected: false,
            ..held
        };
        check(held_offline, seen(true, false, FolderState::Held));
        let offline = Inputs {
            connected: false,
            ..ready
        };
        check(offline, seen(true, false, FolderState::Offline));
        let catching_up = Inputs {
            caught_up: false,
            ..ready
        };
        check(catching_up, seen(true, false, FolderState::Syncing));
    }
}
