//! The two kinds of subject: a plugin spoken to directly, and a provider through the trait.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine::provider::{tags, InstanceTags, Provider, ProvisionRequest, Selector};
use engine::spec::Slot;
use serde_json::{json, Value};
use tend_plugin::methods::{self, DescribeResult, ProvisionResult};
use tend_plugin::ErrorCode;

use super::{Subject, Tags};
use crate::plugin::conn::{CallError, Connection, Launch};
use crate::plugin::logs::LogSink;
use crate::plugin::supervise::{HANDSHAKE_DEADLINE, SHUTDOWN_GRACE};

/// The properties of every instance the checks make: a program that waits, and a file.
pub fn properties() -> Value {
    json!({
        "command": ["sleep", "300"],
        "env": {},
        "files": {"conformance.txt": "made by tend plugin conformance\n"},
        "secretFiles": {},
        "workdir": null,
        "address": null,
        "ports": {},
        "stopTimeoutMs": 1000,
    })
}

/// A plugin, started and spoken to without tend's host in between.
pub struct PluginSubject {
    launch: Launch,
    config: Value,
    logs: LogSink,
    current: tokio::sync::Mutex<Arc<Connection>>,
}

impl PluginSubject {
    /// Starts the plugin and shakes hands.
    pub async fn start(launch: Launch, config: Value, logs: LogSink) -> Result<Self, String> {
        let first = connect(&launch, &config, &logs).await?;
        Ok(PluginSubject {
            launch,
            config,
            logs,
            current: tokio::sync::Mutex::new(first),
        })
    }

    /// The running plugin.
    pub async fn connection(&self) -> Arc<Connection> {
        self.current.lock().await.clone()
    }

    /// Shuts the plugin down; the exit status when it exited by itself.
    pub async fn close(&self) -> Option<std::process::ExitStatus> {
        self.connection().await.shut_down(SHUTDOWN_GRACE).await
    }
}

/// Starts a plugin and shakes hands.
pub async fn connect(
    launch: &Launch,
    config: &Value,
    logs: &LogSink,
) -> Result<Arc<Connection>, String> {
    let (notices, mut heard) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while heard.recv().await.is_some() {} });
    let connection = Connection::spawn(launch, logs.clone(), notices)?;
    connection
        .initialize(&launch.versions, config, HANDSHAKE_DEADLINE)
        .await?;
    Ok(Arc::new(connection))
}

fn rpc(e: CallError) -> String {
    e.to_string()
}

#[async_trait]
impl Subject for PluginSubject {
    async fn provision(
        &self,
        tags: &Tags,
        key: &str,
        deadline: Duration,
    ) -> Result<String, String> {
        let params = json!({
            "spec": {"properties": properties(), "tags": tags},
            "idempotencyKey": key,
            "epoch": 0,
            "deadlineMs": u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        });
        let answer = self
            .connection()
            .await
            .call(
                methods::PROVISION,
                params,
                deadline + Duration::from_secs(1),
            )
            .await
            .map_err(rpc)?;
        let made: ProvisionResult =
            serde_json::from_value(answer).map_err(|e| format!("provision answered {e}"))?;
        Ok(made.id)
    }

    async fn destroy(&self, id: &str) -> Result<(), String> {
        let params = json!({"id": id, "reason": "conformance", "epoch": 0, "deadlineMs": 30_000});
        match self
            .connection()
            .await
            .call(methods::DESTROY, params, Duration::from_secs(31))
            .await
        {
            Ok(_) => Ok(()),
            Err(CallError::Rpc(e)) if e.code == ErrorCode::NotFound => Err(format!(
                "destroy answered NotFound ({}); an unknown id must be success",
                e.message
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn describe(&self, filter: &Tags) -> Result<Vec<(String, Tags)>, String> {
        let answer = self
            .connection()
            .await
            .call(
                methods::DESCRIBE,
                json!({"tags": filter}),
                Duration::from_secs(30),
            )
            .await
            .map_err(rpc)?;
        let found: DescribeResult =
            serde_json::from_value(answer).map_err(|e| format!("describe answered {e}"))?;
        Ok(found
            .instances
            .into_iter()
            .map(|i| (i.id, i.tags))
            .collect())
    }

    async fn crash_and_restart(&self) -> Option<Result<(), String>> {
        let mut current = self.current.lock().await;
        current.kill().await;
        Some(
            connect(&self.launch, &self.config, &self.logs)
                .await
                .map(|fresh| *current = fresh),
        )
    }

    async fn restart(&self) -> Result<(), String> {
        let mut current = self.current.lock().await;
        let clean = current.shut_down(SHUTDOWN_GRACE).await;
        let fresh = connect(&self.launch, &self.config, &self.logs).await?;
        *current = fresh;
        match clean {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("after shutdown and exit it exited with {status}")),
            None => Err(format!(
                "it did not exit within {SHUTDOWN_GRACE:?} of shutdown, exit and its stdin closing: it had to be signalled"
            )),
        }
    }
}

/// Makes a provider as tend would at start; called again to stand for tend restarting.
pub type MakeProvider = Box<dyn Fn() -> Arc<dyn Provider> + Send + Sync>;

/// A provider through the `Provider` trait: the built-in ones, or a plugin behind tend's
/// host.
pub struct ProviderSubject {
    make: MakeProvider,
    current: std::sync::Mutex<Arc<dyn Provider>>,
    template: ProvisionRequest,
}

impl ProviderSubject {
    /// A subject whose instances are made from `template` (its command, settings), with
    /// the checks' tags.
    pub fn new(make: MakeProvider, template: ProvisionRequest) -> ProviderSubject {
        let first = make();
        ProviderSubject {
            make,
            current: std::sync::Mutex::new(first),
            template,
        }
    }

    fn provider(&self) -> Result<Arc<dyn Provider>, String> {
        self.current
            .lock()
            .map(|p| p.clone())
            .map_err(|_| "the provider is poisoned".to_owned())
    }
}

#[async_trait]
impl Subject for ProviderSubject {
    async fn provision(
        &self,
        tags: &Tags,
        key: &str,
        deadline: Duration,
    ) -> Result<String, String> {
        let mut request = self.template.clone();
        request.tags = InstanceTags::from_map(tags);
        request.group = request.tags.group.clone();
        request.slot = match request.tags.slot.parse::<u32>() {
            Ok(n) => Slot::Index(n),
            Err(_) => Slot::Id(request.tags.slot.clone()),
        };
        let own = request.tags.to_map();
        request.labels = tags
            .iter()
            .filter(|(k, _)| !own.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        request.labels.insert(tags::KEY.to_owned(), key.to_owned());
        let provider = self.provider()?;
        match tokio::time::timeout(deadline, provider.provision(request)).await {
            Ok(made) => made.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {deadline:?}")),
        }
    }

    /// The trait says an unknown id with `NotFound`, which tend takes as done: the same
    /// as a plugin's success.
    async fn destroy(&self, id: &str) -> Result<(), String> {
        match self.provider()?.destroy(id).await {
            Ok(()) | Err(engine::provider::ProviderError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn describe(&self, filter: &Tags) -> Result<Vec<(String, Tags)>, String> {
        let selector = Selector {
            project: filter.get(tags::PROJECT).cloned().unwrap_or_default(),
        };
        let found = self
            .provider()?
            .describe(&selector)
            .await
            .map_err(|e| e.to_string())?;
        Ok(found
            .into_iter()
            .map(|i| {
                let mut all = i.labels.clone();
                all.extend(i.tags.to_map());
                (i.id, all)
            })
            .collect())
    }

    async fn crash_and_restart(&self) -> Option<Result<(), String>> {
        // A built-in provider runs inside tend: a crash is tend's, and a restart a new
        // provider over the same state.
        let fresh = (self.make)();
        Some(
            self.current
                .lock()
                .map(|mut p| *p = fresh)
                .map_err(|_| "the provider is poisoned".to_owned()),
        )
    }

    async fn restart(&self) -> Result<(), String> {
        let old = self.provider()?;
        old.close().await;
        let fresh = (self.make)();
        self.current
            .lock()
            .map(|mut p| *p = fresh)
            .map_err(|_| "the provider is poisoned".to_owned())
    }
}
