//! Projects: the identity of what is synced, and deleting everything a
//! project stored (the custom resource's Delete policy). Does I/O.

use super::error::db;
use super::model::{DeleteReport, Project, ProjectIdentity, ProjectSource, SourceMemory};
use super::{ProjectId, Store, StoreError};

impl Store {
    /// Creates the project, or updates its source and branch when the
    /// resource changed them. Idempotent.
    #[tracing::instrument(skip(self, identity), fields(project = %identity.key))]
    pub async fn ensure_project(
        &self,
        identity: &ProjectIdentity,
    ) -> Result<ProjectId, StoreError> {
        let (owner, repo, url) = match &identity.source {
            ProjectSource::GitHub { owner, repo } => {
                (Some(owner.as_str()), Some(repo.as_str()), None)
            }
            ProjectSource::Git { url } => (None, None, Some(url.as_str())),
        };
        let changed = sqlx::query_scalar!(
            r#"
            INSERT INTO projects (key, provider, owner, repo, url, branch)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (key) DO UPDATE
               SET provider = EXCLUDED.provider,
                   owner = EXCLUDED.owner,
                   repo = EXCLUDED.repo,
                   url = EXCLUDED.url,
                   branch = EXCLUDED.branch,
                   head_sha = NULL,
                   head_etag = NULL,
                   tree_walked = false,
                   updated_at = now()
             WHERE (projects.provider, projects.owner, projects.repo, projects.url, projects.branch)
                   IS DISTINCT FROM
                   (EXCLUDED.provider, EXCLUDED.owner, EXCLUDED.repo, EXCLUDED.url, EXCLUDED.branch)
            RETURNING id
            "#,
            identity.key,
            identity.source.provider(),
            owner,
            repo,
            url,
            identity.branch,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db("ensure project"))?;
        if let Some(id) = changed {
            return Ok(ProjectId(id));
        }
        // Unchanged: the conflicting row was left alone.
        let id = sqlx::query_scalar!("SELECT id FROM projects WHERE key = $1", identity.key)
            .fetch_one(&self.pool)
            .await
            .map_err(db("read project"))?;
        Ok(ProjectId(id))
    }

    /// The project stored under `key`, if any.
    pub async fn find_project(&self, key: &str) -> Result<Option<Project>, StoreError> {
        let row = sqlx::query!(
            r#"SELECT id, key, provider, owner, repo, url, branch, created_at
               FROM projects WHERE key = $1"#,
            key
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read project"))?;
        let Some(row) = row else { return Ok(None) };
        let source = match (row.provider.as_str(), row.owner, row.repo, row.url) {
            ("github", Some(owner), Some(repo), None) => ProjectSource::GitHub { owner, repo },
            ("git", None, None, Some(url)) => ProjectSource::Git { url },
            (provider, ..) => {
                return Err(StoreError::Corrupt {
                    column: "projects.provider",
                    value: provider.to_string(),
                });
            }
        };
        Ok(Some(Project {
            id: ProjectId(row.id),
            identity: ProjectIdentity {
                key: row.key,
                source,
                branch: row.branch,
            },
            created_at: row.created_at,
        }))
    }

    /// What the project's source remembered after its last poll (nothing
    /// for a project that does not exist).
    pub async fn source_memory(&self, project: ProjectId) -> Result<SourceMemory, StoreError> {
        let row = sqlx::query_as!(
            SourceMemory,
            "SELECT head_sha, head_etag, tree_walked FROM projects WHERE id = $1",
            project.0
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read source memory"))?;
        Ok(row.unwrap_or_default())
    }

    /// Keeps what the project's source remembered; callers write only when
    /// it changed (an unchanged poll writes nothing).
    pub async fn set_source_memory(
        &self,
        project: ProjectId,
        memory: &SourceMemory,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE projects SET head_sha = $2, head_etag = $3, tree_walked = $4 WHERE id = $1",
            project.0,
            memory.head_sha,
            memory.head_etag,
            memory.tree_walked,
        )
        .execute(&self.pool)
        .await
        .map_err(db("write source memory"))?;
        Ok(())
    }

    /// The key ("namespace/name") of a project, for messages.
    pub(crate) async fn project_key(&self, project: ProjectId) -> Result<String, StoreError> {
        sqlx::query_scalar!("SELECT key FROM projects WHERE id = $1", project.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read project"))?
            .ok_or(StoreError::ProjectNotFound { project })
    }

    /// Deletes the project and every run, file version and memory entry it
    /// stored, in one transaction. A project that does not exist (any more)
    /// is not an error: the report counts zero rows.
    ///
    /// Stop the project's running sync first: its next write then fails with
    /// a not-found error instead of recreating rows.
    #[tracing::instrument(skip(self))]
    pub async fn delete_project(&self, project: ProjectId) -> Result<DeleteReport, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("begin transaction"))?;
        let locked = sqlx::query_scalar!(
            "SELECT id FROM projects WHERE id = $1 FOR UPDATE",
            project.0
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("lock project"))?;
        if locked.is_none() {
            return Ok(DeleteReport::default());
        }
        let memory_entries_deleted = sqlx::query!(
            "DELETE FROM memory_entries WHERE project_id = $1",
            project.0
        )
        .execute(&mut *tx)
        .await
        .map_err(db("delete memory entries"))?
        .rows_affected();
        let files_deleted = sqlx::query!(
            "DELETE FROM repository_files WHERE project_id = $1",
            project.0
        )
        .execute(&mut *tx)
        .await
        .map_err(db("delete file versions"))?
        .rows_affected();
        // All runs in one statement: their references to each other are
        // checked at its end.
        let syncs_deleted =
            sqlx::query!("DELETE FROM project_syncs WHERE project_id = $1", project.0)
                .execute(&mut *tx)
                .await
                .map_err(db("delete sync runs"))?
                .rows_affected();
        sqlx::query!("DELETE FROM projects WHERE id = $1", project.0)
            .execute(&mut *tx)
            .await
            .map_err(db("delete project"))?;
        tx.commit().await.map_err(db("commit project deletion"))?;
        let report = DeleteReport {
            syncs_deleted,
            files_deleted,
            memory_entries_deleted,
        };
        tracing::info!(?report, "deleted project data");
        Ok(report)
    }
}
