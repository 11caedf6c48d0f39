//! Condition types and reasons, and the one pure function that updates a
//! condition list the way the Kubernetes API conventions ask (the transition
//! time moves only when the status flips). No I/O.
//!
//! Following Flux and kstatus: `Ready` always exists once the controller has
//! looked at the object; `Reconciling` and `Stalled` exist only while true.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The object is in its desired state: the last completed sync matches the spec.
pub const READY: &str = "Ready";
/// The controller is working towards the desired state (a run is in progress or retrying).
pub const RECONCILING: &str = "Reconciling";
/// The controller cannot make progress until the user changes something.
pub const STALLED: &str = "Stalled";

/// Documented reasons, used in conditions, events and metric labels.
pub mod reason {
    /// The last run completed.
    pub const SUCCEEDED: &str = "Succeeded";
    /// A run is in progress.
    pub const PROGRESSING: &str = "Progressing";
    /// A run failed and will be retried with backoff.
    pub const PROGRESSING_WITH_RETRY: &str = "ProgressingWithRetry";
    /// `spec.suspend` is true.
    pub const SUSPENDED: &str = "Suspended";
    /// The spec cannot be acted on as written.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A referenced Secret does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// The database could not be reached or refused a write.
    pub const STORE_FAILED: &str = "StoreFailed";
    /// Another run completed on the same base first.
    pub const CONCURRENT_SYNC: &str = "ConcurrentSync";
    /// The API server refused a request of the operator.
    pub const KUBERNETES_API_FAILED: &str = "KubernetesApiFailed";
}

/// The status of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    /// The controller is working on it (e.g. `Ready` while a run is in progress).
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// Sets `type_` to the given status, reason and message. The transition time
/// changes only when the status changes; `observedGeneration` always moves.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Status,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = status.as_str().to_string();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = now.clone();
            }
            existing.status = status;
            existing.reason = reason.to_string();
            existing.message = message.to_string();
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// Removes `type_`: abnormal-true conditions are dropped rather than set False.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            READY,
            Status::False,
            reason::PROGRESSING,
            "syncing",
            Some(1),
            &time(10),
        );
        set_condition(
            &mut conditions,
            READY,
            Status::False,
            reason::PROGRESSING,
            "still",
            Some(2),
            &time(20),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, time(10));
        assert_eq!(conditions[0].message, "still");
        assert_eq!(conditions[0].observed_generation, Some(2));

        set_condition(
            &mut conditions,
            READY,
            Status::True,
            reason::SUCCEEDED,
            "done",
            Some(2),
            &time(30),
        );
        assert_eq!(conditions[0].last_transition_time, time(30));
        assert_eq!(conditions[0].status, "True");
    }

    #[test]
    fn abnormal_conditions_are_removed_not_set_false() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            STALLED,
            Status::True,
            reason::INVALID_SPEC,
            "bad",
            None,
            &time(1),
        );
        set_condition(
            &mut conditions,
            READY,
            Status::False,
            reason::INVALID_SPEC,
            "bad",
            None,
            &time(1),
        );
        remove_condition(&mut conditions, STALLED);
        assert!(find_condition(&conditions, STALLED).is_none());
        assert!(find_condition(&conditions, READY).is_some());
    }
}
