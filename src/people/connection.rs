//! Which cluster, as whom: the kubectl flags people already type
//! (`--kubeconfig`, `--context`, `-n`, `--as`, `--as-group`), and who the
//! API server says the caller is.

use std::path::PathBuf;

use clap::Args;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Api, Client, Config};

use crate::apikey::ApiKey;
use crate::people::error::{Call, PeopleError};

#[derive(Args, Debug, Clone, Default)]
pub struct Connection {
    /// The kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Act as this user (impersonation, for admins).
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,
    /// Act with this group too (repeatable; needs --as).
    #[arg(long = "as-group", value_name = "GROUP", requires = "as_user")]
    pub as_groups: Vec<String>,
}

/// A client for the chosen cluster and the namespace to work in.
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
    /// The API server's URL, for errors that say it cannot be reached.
    pub server: String,
}

impl Connection {
    /// Builds the client the way kubectl would from the same flags.
    pub async fn connect(&self) -> Result<Cluster, PeopleError> {
        let mut config = self.config().await?;
        if let Some(user) = &self.as_user {
            config.auth_info.impersonate = Some(user.clone());
            if !self.as_groups.is_empty() {
                config.auth_info.impersonate_groups = Some(self.as_groups.clone());
            }
        }
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config)
            .map_err(|e| PeopleError::Kubeconfig(format!("cannot build a client: {e}")))?;
        Ok(Cluster {
            client,
            namespace,
            server,
        })
    }

    async fn config(&self) -> Result<Config, PeopleError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let result = match &self.kubeconfig {
            Some(path) => match Kubeconfig::read_from(path) {
                Ok(kubeconfig) => Config::from_custom_kubeconfig(kubeconfig, &options).await,
                Err(e) => Err(e),
            },
            None => Config::from_kubeconfig(&options).await,
        };
        match result {
            Ok(config) => Ok(config),
            // Inside a pod without a kubeconfig: its ServiceAccount, as
            // kubectl does.
            Err(e) if self.nothing_chosen() && is_missing(&e) && in_a_pod() => {
                Config::incluster().map_err(|e| PeopleError::Kubeconfig(e.to_string()))
            }
            Err(e) if is_missing(&e) => Err(PeopleError::NoKubeconfig(e.to_string())),
            Err(e) => Err(PeopleError::Kubeconfig(e.to_string())),
        }
    }

    fn nothing_chosen(&self) -> bool {
        self.kubeconfig.is_none()
            && self.context.is_none()
            && std::env::var_os("KUBECONFIG").is_none()
    }
}

fn is_missing(error: &KubeconfigError) -> bool {
    match error {
        KubeconfigError::FindPath => true,
        KubeconfigError::ReadConfig(e, _) => e.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

fn in_a_pod() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

impl Cluster {
    pub fn api_keys(&self) -> Api<ApiKey> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The caller's username, as the API server knows it (after
    /// impersonation): the owner of the keys they create.
    pub async fn whoami(&self) -> Result<String, PeopleError> {
        let review = Api::<SelfSubjectReview>::all(self.client.clone())
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .map_err(|e| {
                Call::new("create", "selfsubjectreviews.authentication.k8s.io").failed(e)
            })?;
        review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .filter(|u| !u.is_empty())
            .ok_or(PeopleError::NoIdentity)
    }
}
