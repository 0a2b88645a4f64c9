//! Per-user rate limits: one GCRA limiter (`governor`, keyed by user) per class of action,
//! so that flooding one action (toggling a reaction, say) never uses up another's budget,
//! and the limiter maps stay bounded (pruned on a timer and whenever they grow large).

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat_domain::UserId;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::ServiceError;

/// A class of action that has its own per-user budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionClass {
    /// Sending a message (REST or WebSocket).
    Send,
    /// Editing a message.
    Edit,
    /// Deleting a message.
    Delete,
    /// Adding or removing a reaction (one budget for both).
    React,
    /// Marking a conversation read (REST or WebSocket) and muting or unmuting it.
    Read,
    /// A typing frame.
    Typing,
    /// Creating a GROUP or POST_LINKED conversation.
    CreateGroup,
    /// Adding participants.
    AddParticipants,
    /// Opening (getting or creating) a DIRECT conversation.
    OpenDirect,
    /// Renaming, archiving, unarchiving, removing or leaving, changing a role.
    Manage,
}

impl ActionClass {
    /// Every class, in the order of the settings table.
    pub const ALL: [ActionClass; 10] = [
        ActionClass::Send,
        ActionClass::Edit,
        ActionClass::Delete,
        ActionClass::React,
        ActionClass::Read,
        ActionClass::Typing,
        ActionClass::CreateGroup,
        ActionClass::AddParticipants,
        ActionClass::OpenDirect,
        ActionClass::Manage,
    ];

    /// The name used in settings (`CHAT_RATE_LIMITS`) and the docs.
    pub fn name(self) -> &'static str {
        match self {
            ActionClass::Send => "send",
            ActionClass::Edit => "edit",
            ActionClass::Delete => "delete",
            ActionClass::React => "react",
            ActionClass::Read => "read",
            ActionClass::Typing => "typing",
            ActionClass::CreateGroup => "create_group",
            ActionClass::AddParticipants => "add_participants",
            ActionClass::OpenDirect => "open_direct",
            ActionClass::Manage => "manage",
        }
    }

    /// The class a settings name stands for.
    pub fn from_name(name: &str) -> Option<ActionClass> {
        ActionClass::ALL.into_iter().find(|a| a.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A sustained rate (`count` actions per `per`) with a burst allowance: GCRA lets a user
/// spend `burst` at once, then refills one action every `per / count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: NonZeroU32,
    per: Duration,
    burst: NonZeroU32,
}

impl Rate {
    /// `count` per `per`, bursts of `burst`; `None` when `per` is zero or so small that
    /// one action would refill in no time at all.
    pub fn new(count: NonZeroU32, per: Duration, burst: NonZeroU32) -> Option<Rate> {
        let rate = Rate { count, per, burst };
        rate.quota().map(|_| rate)
    }

    /// `count` per second, bursts of `burst`.
    pub fn per_second(count: NonZeroU32, burst: NonZeroU32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(1),
            burst,
        }
    }

    /// `count` per minute, bursts of `burst`.
    pub fn per_minute(count: NonZeroU32, burst: NonZeroU32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(60),
            burst,
        }
    }

    /// Actions per period, sustained.
    pub fn count(&self) -> NonZeroU32 {
        self.count
    }

    /// The period.
    pub fn per(&self) -> Duration {
        self.per
    }

    /// Actions allowed at once.
    pub fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    fn quota(&self) -> Option<Quota> {
        Quota::with_period(self.per / self.count.get()).map(|q| q.allow_burst(self.burst))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s".to_owned(),
            60 => "min".to_owned(),
            3600 => "h".to_owned(),
            _ => format!("{}ms", self.per.as_millis()),
        };
        write!(f, "{}/{unit}:{}", self.count, self.burst)
    }
}

fn n(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value).unwrap_or(NonZeroU32::MIN)
}

/// The rate of every class of action except sends (whose rate is
/// [`Limits::sends_per_second`](crate::Limits::sends_per_second) and
/// [`Limits::send_burst`](crate::Limits::send_burst)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionRates {
    /// Message edits.
    pub edit: Rate,
    /// Message deletions.
    pub delete: Rate,
    /// Reactions added or removed.
    pub react: Rate,
    /// Read marks (REST and WebSocket) and mute changes.
    pub read: Rate,
    /// Typing frames (over the limit they are dropped silently).
    pub typing: Rate,
    /// GROUP and POST_LINKED creations.
    pub create_group: Rate,
    /// Participant additions (one per request, however many users it names).
    pub add_participants: Rate,
    /// DIRECT conversations opened.
    pub open_direct: Rate,
    /// Renames, archive changes, removals and departures, role changes.
    pub manage: Rate,
}

impl Default for ActionRates {
    fn default() -> Self {
        Self {
            edit: Rate::per_second(n(5), n(20)),
            delete: Rate::per_second(n(5), n(20)),
            react: Rate::per_second(n(5), n(20)),
            read: Rate::per_second(n(10), n(30)),
            typing: Rate::per_second(n(5), n(10)),
            create_group: Rate::per_minute(n(30), n(10)),
            add_participants: Rate::per_minute(n(60), n(20)),
            open_direct: Rate::per_minute(n(60), n(30)),
            manage: Rate::per_minute(n(60), n(20)),
        }
    }
}

impl ActionRates {
    /// The same rate for every class (tests use a generous one).
    pub fn uniform(rate: Rate) -> Self {
        Self {
            edit: rate,
            delete: rate,
            react: rate,
            read: rate,
            typing: rate,
            create_group: rate,
            add_participants: rate,
            open_direct: rate,
            manage: rate,
        }
    }

    /// The rate of `action`; `None` for [`ActionClass::Send`], whose rate lives in
    /// [`Limits`](crate::Limits).
    pub fn get(&self, action: ActionClass) -> Option<Rate> {
        Some(match action {
            ActionClass::Send => return None,
            ActionClass::Edit => self.edit,
            ActionClass::Delete => self.delete,
            ActionClass::React => self.react,
            ActionClass::Read => self.read,
            ActionClass::Typing => self.typing,
            ActionClass::CreateGroup => self.create_group,
            ActionClass::AddParticipants => self.add_participants,
            ActionClass::OpenDirect => self.open_direct,
            ActionClass::Manage => self.manage,
        })
    }

    /// Sets the rate of `action`; `false` (and nothing changed) for [`ActionClass::Send`].
    pub fn set(&mut self, action: ActionClass, rate: Rate) -> bool {
        let slot = match action {
            ActionClass::Send => return false,
            ActionClass::Edit => &mut self.edit,
            ActionClass::Delete => &mut self.delete,
            ActionClass::React => &mut self.react,
            ActionClass::Read => &mut self.read,
            ActionClass::Typing => &mut self.typing,
            ActionClass::CreateGroup => &mut self.create_group,
            ActionClass::AddParticipants => &mut self.add_participants,
            ActionClass::OpenDirect => &mut self.open_direct,
            ActionClass::Manage => &mut self.manage,
        };
        *slot = rate;
        true
    }
}

/// Users tracked per class before a check prunes the map at once rather than waiting for
/// the timer ([`ChatService::prune_rate_limiters`](crate::ChatService::prune_rate_limiters)).
pub const MAX_TRACKED_USERS: usize = 100_000;

/// How many checks pass between two looks at the size of the maps.
const SIZE_CHECK_EVERY: u64 = 1024;

/// One keyed limiter per class.
pub(crate) struct RateLimiters {
    limiters: Vec<DefaultKeyedRateLimiter<UserId>>,
    max_tracked: usize,
    checks: AtomicU64,
}

impl RateLimiters {
    pub(crate) fn new(send: Rate, rates: &ActionRates, max_tracked: usize) -> Self {
        let limiters = ActionClass::ALL
            .into_iter()
            .map(|action| {
                let rate = rates.get(action).unwrap_or(send);
                let quota = rate
                    .quota()
                    .unwrap_or_else(|| Quota::per_second(rate.count).allow_burst(rate.burst));
                RateLimiter::keyed(quota)
            })
            .collect();
        Self {
            limiters,
            max_tracked,
            checks: AtomicU64::new(0),
        }
    }

    /// Spends one of `user`'s `action` budget, or says how long to wait.
    pub(crate) fn check(&self, action: ActionClass, user: UserId) -> Result<(), ServiceError> {
        let limiter = &self.limiters[action.index()];
        if self.checks.fetch_add(1, Ordering::Relaxed) % SIZE_CHECK_EVERY == 0
            && limiter.len() > self.max_tracked
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(&user).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ServiceError::RateLimited {
                retry_after: wait.max(Duration::from_secs(1)),
            }
        })
    }

    /// Forgets every user whose budget is full again (indistinguishable from a new user);
    /// returns how many users are still tracked, over all classes.
    pub(crate) fn prune(&self) -> usize {
        self.limiters
            .iter()
            .map(|limiter| {
                limiter.retain_recent();
                limiter.shrink_to_fit();
                limiter.len()
            })
            .sum()
    }

    /// How many users are tracked, over all classes.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.limiters.iter().map(DefaultKeyedRateLimiter::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64) -> UserId {
        UserId::new(id).unwrap()
    }

    #[test]
    fn each_class_has_its_own_budget() {
        let rates = ActionRates::uniform(Rate::per_minute(n(1), n(2)));
        let limiters = RateLimiters::new(Rate::per_minute(n(1), n(2)), &rates, 1000);
        for action in ActionClass::ALL {
            assert!(limiters.check(action, user(1)).is_ok(), "{action:?}");
            assert!(limiters.check(action, user(1)).is_ok(), "{action:?}");
            let refused = limiters.check(action, user(1)).unwrap_err();
            assert!(
                matches!(refused, ServiceError::RateLimited { retry_after } if retry_after >= Duration::from_secs(1)),
                "{action:?}: {refused:?}"
            );
            // Another user is not affected.
            assert!(limiters.check(action, user(2)).is_ok(), "{action:?}");
        }
    }

    #[test]
    fn pruning_forgets_users_whose_budget_refilled() {
        // One action every millisecond: a user's budget is full again almost at once.
        let fast = Rate::new(n(1000), Duration::from_secs(1), n(1)).unwrap();
        let slow = Rate::per_minute(n(1), n(1));
        let rates = ActionRates {
            edit: fast,
            ..ActionRates::uniform(slow)
        };
        let limiters = RateLimiters::new(slow, &rates, 1000);
        for id in 1..=500 {
            limiters.check(ActionClass::Edit, user(id)).unwrap();
        }
        limiters.check(ActionClass::Manage, user(1)).unwrap();
        assert_eq!(limiters.tracked(), 501);
        std::thread::sleep(Duration::from_millis(20));
        // The edit budgets refilled; the one manage budget is still spent.
        assert_eq!(limiters.prune(), 1);
        assert!(limiters.check(ActionClass::Manage, user(1)).is_err());
    }

    #[test]
    fn a_map_over_its_bound_is_pruned_by_the_checks_themselves() {
        let fast = Rate::new(n(1000), Duration::from_secs(1), n(1)).unwrap();
        let limiters = RateLimiters::new(fast, &ActionRates::uniform(fast), 100);
        for id in 1..=(SIZE_CHECK_EVERY as i64) {
            limiters.check(ActionClass::Read, user(id)).unwrap();
        }
        assert_eq!(limiters.tracked(), SIZE_CHECK_EVERY as usize);
        std::thread::sleep(Duration::from_millis(20));
        // The next size check sees more than 100 users and prunes before counting.
        limiters.check(ActionClass::Read, user(100_000)).unwrap();
        assert_eq!(limiters.tracked(), 1);
    }

    #[test]
    fn rates_read_back_as_written() {
        assert_eq!(Rate::per_second(n(5), n(20)).to_string(), "5/s:20");
        assert_eq!(Rate::per_minute(n(30), n(10)).to_string(), "30/min:10");
        assert_eq!(Rate::new(n(1), Duration::ZERO, n(1)), None);
        for action in ActionClass::ALL {
            assert_eq!(ActionClass::from_name(action.name()), Some(action));
        }
    }
}
