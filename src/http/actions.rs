//! What a user may change on a ProjectSync through the operator's API (and
//! the web page): ask for a sync now, suspend or resume, and hold the mirror
//! at an earlier sync (`spec.restore`) or lift that hold. Each action is one
//! merge patch of the resource, made with the operator's identity after the
//! caller passed a SubjectAccessReview for `patch` (see [`super::auth`]),
//! and one Kubernetes Event that names the user, so `kubectl describe` shows
//! who did what. The reconcile does the work; nothing here touches the
//! store. Network I/O against the API server.

use chrono::{SecondsFormat, Utc};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde_json::json;

use crate::{
    api::{ProjectSync, REQUESTED_AT_ANNOTATION, conditions::reason},
    store::SyncId,
};

/// The field manager of the API's patches (apart from the controller's
/// status writes, so `managedFields` tells them apart).
pub const FIELD_MANAGER: &str = "projectsync-api";

/// Longest user name written into an event note (names come from the
/// TokenReview, so they are trusted, but an OIDC name can be long).
const MAX_USER_CHARS: usize = 256;

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("projectsyncs.projectsync.dev \"{name}\" not found in {namespace}")]
    NotFound { namespace: String, name: String },
    #[error("cannot {action} ProjectSync {namespace}/{name}: {source}")]
    Kube {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Applies actions and records them. Cheap to clone.
#[derive(Clone)]
pub struct Actions {
    client: Client,
    recorder: Recorder,
}

impl Actions {
    /// Patches with `client` and records events as `instance` of the
    /// `projectsync` controller.
    pub fn new(client: Client, instance: &str) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "projectsync".into(),
                instance: Some(instance.to_string()),
            },
        );
        Actions { client, recorder }
    }

    /// Asks for a sync now: sets the `projectsync.dev/requested-at`
    /// annotation to the current time (a new value is a new request).
    pub async fn sync_now(
        &self,
        namespace: &str,
        name: &str,
        user: &str,
    ) -> Result<ProjectSync, ActionError> {
        let at = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let patch = json!({"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: at}}});
        let obj = self
            .patch("request a sync of", namespace, name, &patch)
            .await?;
        self.record(
            &obj,
            "RequestSync",
            reason::SYNC_REQUESTED,
            format!("{} asked for a sync now", build_user(user)),
        )
        .await;
        Ok(obj)
    }

    /// Sets `spec.suspend`.
    pub async fn set_suspend(
        &self,
        namespace: &str,
        name: &str,
        user: &str,
        suspend: bool,
    ) -> Result<ProjectSync, ActionError> {
        let (action, event_reason, verb) = if suspend {
            ("suspend", reason::SUSPEND_REQUESTED, "suspended")
        } else {
            ("resume", reason::RESUME_REQUESTED, "resumed")
        };
        let patch = json!({"spec": {"suspend": suspend}});
        let obj = self.patch(action, namespace, name, &patch).await?;
        self.record(
            &obj,
            if suspend { "Suspend" } else { "Resume" },
            event_reason,
            format!("{} {verb} syncing", build_user(user)),
        )
        .await;
        Ok(obj)
    }

    /// Holds the mirror at `sync` (`spec.restore.syncId`), or lifts the
    /// hold with `None`. The reconcile checks that the sync is a completed
    /// run of this resource and makes its picture current.
    pub async fn restore(
        &self,
        namespace: &str,
        name: &str,
        user: &str,
        sync: Option<SyncId>,
    ) -> Result<ProjectSync, ActionError> {
        let (patch, event_reason, note) = match sync {
            Some(sync) => (
                json!({"spec": {"restore": {"syncId": sync.to_string()}}}),
                reason::RESTORE_REQUESTED,
                format!("{} restored sync {sync} (spec.restore)", build_user(user)),
            ),
            None => (
                json!({"spec": {"restore": null}}),
                reason::RESTORE_LIFTED,
                format!(
                    "{} lifted the restore: following the branch again",
                    build_user(user)
                ),
            ),
        };
        let obj = self.patch("restore", namespace, name, &patch).await?;
        self.record(
            &obj,
            if sync.is_some() {
                "Restore"
            } else {
                "LiftRestore"
            },
            event_reason,
            note,
        )
        .await;
        Ok(obj)
    }

    async fn patch(
        &self,
        action: &'static str,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<ProjectSync, ActionError> {
        let api: Api<ProjectSync> = Api::namespaced(self.client.clone(), namespace);
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(patch),
        )
        .await
        .map_err(|source| match &source {
            kube::Error::Api(status) if status.code == 404 => ActionError::NotFound {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
            _ => ActionError::Kube {
                action,
                namespace: namespace.to_string(),
                name: name.to_string(),
                source,
            },
        })
    }

    /// Publishes the event of an action; a failure is logged, not returned:
    /// the patch is what the user asked for, and it happened.
    async fn record(&self, obj: &ProjectSync, action: &str, reason: &str, note: String) {
        tracing::info!(
            namespace = obj.metadata.namespace.as_deref().unwrap_or_default(),
            name = obj.metadata.name.as_deref().unwrap_or_default(),
            reason,
            "{note}"
        );
        let event = Event {
            type_: EventType::Normal,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(%error, reason, "could not publish the event of an action");
        }
    }
}

/// The user as written in an event note: `user "alice"`, cut to a bounded
/// length, or `an anonymous caller` when authentication is off.
fn build_user(user: &str) -> String {
    if user.is_empty() {
        return "an anonymous caller (--http-auth=false)".to_string();
    }
    let name: String = user.chars().take(MAX_USER_CHARS).collect();
    format!("user {name:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_note_names_the_user_quoted_and_bounded() {
        assert_eq!(build_user("alice"), "user \"alice\"");
        assert!(build_user("").contains("anonymous"));
        let long = "x".repeat(10_000);
        assert!(build_user(&long).len() < 300);
        // A newline in a name cannot forge a second line of the note.
        assert_eq!(build_user("a\nb"), "user \"a\\nb\"");
    }
}
