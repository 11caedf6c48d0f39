//! The user commands through the operator's API (`--server`): a bearer
//! token from `--token` or the kubeconfig's user (`token` or `tokenFile`),
//! JSON over HTTP(S), answers bounded in size, the API's `Status` failures
//! turned into one-line errors. No database URL needed; the operator
//! authorizes every call as the user. Network I/O.

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use crate::cli::ServerArgs;

use super::CommandError;

/// Largest answer read (a page of 1,000 files or 100 chunks fits easily).
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// Time limit of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of the operator's API.
pub struct Remote {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Remote {
    /// The client for `args.server`, with `--token` or the kubeconfig's.
    pub async fn connect(args: &ServerArgs) -> Result<Option<Self>, CommandError> {
        let Some(server) = args
            .server
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        else {
            return Ok(None);
        };
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(CommandError::Usage(format!(
                "--server {server:?} is not an http(s) URL such as http://localhost:8080"
            )));
        }
        let token = match args
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            Some(token) => Some(token.to_string()),
            None => kubeconfig_token().await?,
        };
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|source| CommandError::Remote {
                url: server.to_string(),
                source,
            })?;
        Ok(Some(Remote {
            http,
            base: server.trim_end_matches('/').to_string(),
            token,
        }))
    }

    /// `GET path?query`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, CommandError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.get(&url).query(query), &url).await
    }

    /// `POST path` with a JSON body (or none).
    pub async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CommandError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.post(&url);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request, &url).await
    }

    /// `DELETE path`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CommandError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.delete(&url), &url).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        mut request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, CommandError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let remote = |source| CommandError::Remote {
            url: url.to_string(),
            source,
        };
        let mut response = request.send().await.map_err(remote)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(remote)? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(CommandError::Api {
                    status: status.as_u16(),
                    message: format!("the answer of {url} is larger than {MAX_ANSWER_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
            return Err(CommandError::Api {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|error| CommandError::Api {
            status: status.as_u16(),
            message: format!("the answer of {url} is not what this CLI expects: {error}"),
        })
    }
}

/// The kubeconfig user's bearer token (`token`, else `tokenFile`), if any.
/// Client certificates and exec plugins carry no token the operator could
/// review: pass one with `--token` (e.g. `kubectl create token`).
async fn kubeconfig_token() -> Result<Option<String>, CommandError> {
    use secrecy::ExposeSecret;
    let config = kube::Config::infer()
        .await
        .map_err(|e| CommandError::Kubeconfig(kube::Error::InferConfig(e)))?;
    if let Some(token) = &config.auth_info.token {
        return Ok(Some(token.expose_secret().trim().to_string()));
    }
    if let Some(file) = &config.auth_info.token_file {
        let token = tokio::fs::read_to_string(file)
            .await
            .map_err(|source| CommandError::Io {
                action: format!("read the kubeconfig's tokenFile {file}"),
                source,
            })?;
        return Ok(Some(token.trim().to_string()));
    }
    Ok(None)
}

/// The API path of the ProjectSync `key` (`namespace/name`), checked.
pub fn resource_path(key: &str) -> Result<String, CommandError> {
    let key = super::parse_project_key(key)?;
    let (namespace, name) = key.split_once('/').unwrap_or_default();
    let valid = crate::http::api::params::check_namespace(namespace).is_ok()
        && crate::http::api::params::check_name(name).is_ok();
    if !valid {
        return Err(CommandError::BadProjectKey(key.to_string()));
    }
    Ok(format!(
        "/api/v1/namespaces/{namespace}/projectsyncs/{name}"
    ))
}
