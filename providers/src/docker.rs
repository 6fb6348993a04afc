//! The `docker` provider: each instance is a container on a Docker Engine (bollard, with the
//! API version negotiated: Debian's engine speaks 1.41).
//!
//! Tags are container labels set at creation; `describe` filters by the `tend.project`
//! label; ports are published on 127.0.0.1 only; an exited container stays visible as a
//! dead instance until it is healed. tend never pulls an image unless the spec says
//! `pull = True`. `watch` follows the engine's event stream, so a dying container is seen
//! at once, and reconnects when the engine comes back.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use engine::provider::{
    require_tags, tags, InstanceState, InstanceTags, ObservedInstance, Provider, ProviderError,
    ProviderEvent, ProvisionRequest, Selector,
};
use futures_util::StreamExt;
use tokio::sync::Mutex;

const NAME: &str = "docker";
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
const SETTINGS: [&str; 5] = ["image", "ports", "network", "host", "pull"];
/// A label on containers that another provider made through Docker (`vagrant`), naming
/// it: they are that provider's instances, never this one's.
pub const VIA: &str = "tend.via";

fn backend(detail: String) -> ProviderError {
    ProviderError::backend(NAME, detail)
}

fn invalid(detail: String) -> ProviderError {
    ProviderError::invalid(NAME, detail)
}

/// The settings of a `docker(...)` provider.
struct Settings {
    image: String,
    /// Container port to host port (0: the engine picks one).
    ports: Vec<(u16, u16)>,
    network: Option<String>,
    host: String,
    pull: bool,
}

fn settings(props: &BTreeMap<String, serde_json::Value>) -> Result<Settings, ProviderError> {
    if let Some(other) = props.keys().find(|k| !SETTINGS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown setting {other:?}; docker takes {}",
            SETTINGS.join(", ")
        )));
    }
    let image = props
        .get("image")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("docker() needs an image".to_owned()))?
        .to_owned();
    let ports = published(NAME, props)?;
    Ok(Settings {
        image,
        ports,
        network: props
            .get("network")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        host: engine_address(
            props
                .get("host")
                .and_then(|v| v.as_str())
                .unwrap_or(DEFAULT_HOST),
        )
        .map_err(invalid)?,
        pull: props.get("pull").and_then(|v| v.as_bool()).unwrap_or(false),
    })
}

/// A provider's `ports` setting (container port to host port, 0 for one the engine picks),
/// in order; templates are rendered by now.
pub(crate) fn published(
    provider: &str,
    props: &BTreeMap<String, serde_json::Value>,
) -> Result<Vec<(u16, u16)>, ProviderError> {
    let invalid = |detail: String| ProviderError::invalid(provider, detail);
    let mut ports = Vec::new();
    if let Some(map) = props.get("ports").and_then(|v| v.as_object()) {
        for (inside, outside) in map {
            let inside: u16 = inside
                .parse()
                .map_err(|_| invalid(format!("port {inside:?} is not a port number")))?;
            let outside = match outside {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| invalid(format!("host port for {inside} must be a number or a template that renders to one, got {outside}")))?;
            ports.push((inside, outside));
        }
    }
    ports.sort_unstable();
    Ok(ports)
}

/// Checks an engine's address: `unix:///path/to/docker.sock`, or `tcp://host:port` (an
/// engine listening beside its socket, reachable from every replica of a controller).
fn engine_address(host: &str) -> Result<String, String> {
    let ok = match host.split_once("://") {
        Some(("unix", path)) => path.starts_with('/'),
        Some(("tcp" | "http", address)) => address
            .rsplit_once(':')
            .is_some_and(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok()),
        _ => false,
    };
    if ok {
        Ok(host.to_owned())
    } else {
        Err(format!(
            "host must be unix:///path/to/docker.sock or tcp://HOST:PORT, got {host:?}"
        ))
    }
}

/// Containers on Docker Engines.
pub struct DockerProvider {
    dir: PathBuf,
    clients: Mutex<HashMap<String, Docker>>,
    /// Every engine a spec named, and the default one: describe asks them all. An engine a
    /// spec named (`true`) must answer; the default one, when no spec named it, may be
    /// missing (a machine without Docker).
    hosts: std::sync::Mutex<BTreeMap<String, bool>>,
    /// While `watch` runs: the project and where its events go; every engine gets a
    /// watcher of its own, engines named later too.
    watching: std::sync::Mutex<Option<(String, tokio::sync::mpsc::Sender<ProviderEvent>)>>,
    /// Engines with a watcher.
    watched: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Images already found on an engine (host, image): not inspected again.
    images: std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
}

/// A client for the engine at `host`, connected and with the API version negotiated.
pub(crate) async fn connect(host: &str) -> Result<Docker, ProviderError> {
    let unreachable = |e: bollard::errors::Error| {
        backend(format!("cannot reach the Docker engine at {host}: {e}"))
    };
    let client = if host.starts_with("unix://") {
        Docker::connect_with_unix(host, 120, API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_http(host, 120, API_DEFAULT_VERSION)
    };
    client
        .map_err(unreachable)?
        .negotiate_version()
        .await
        .map_err(unreachable)
}

/// Docker's short form of a container id (12 hex digits), which its API accepts everywhere.
fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerProvider {
    /// A docker provider keeping mounted flavor files under `state_dir/docker/`.
    pub fn new(state_dir: &Path) -> Self {
        DockerProvider {
            dir: state_dir.join("docker"),
            clients: Mutex::new(HashMap::new()),
            hosts: std::sync::Mutex::new([(DEFAULT_HOST.to_owned(), false)].into_iter().collect()),
            watching: std::sync::Mutex::new(None),
            watched: std::sync::Mutex::new(Default::default()),
            images: std::sync::Mutex::new(Default::default()),
        }
    }

    /// A client for `host`, connected and with the API version negotiated.
    async fn client(&self, host: &str) -> Result<Docker, ProviderError> {
        if let Some(client) = self.clients.lock().await.get(host) {
            return Ok(client.clone());
        }
        let client = connect(host).await?;
        self.clients
            .lock()
            .await
            .insert(host.to_owned(), client.clone());
        Ok(client)
    }

    /// Every engine, and whether it must answer.
    fn hosts(&self) -> Vec<(String, bool)> {
        self.hosts
            .lock()
            .map(|h| h.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// Starts a watcher for every engine that has none, while a watch runs.
    fn watch_new_hosts(&self) {
        let Some((project, events)) = self.watching.lock().ok().and_then(|w| w.clone()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(mut watched) = self.watched.lock() else {
            return;
        };
        for (host, _) in self.hosts() {
            if watched.insert(host.clone()) {
                runtime.spawn(follow_events(host, project.clone(), events.clone()));
            }
        }
    }

    async fn ensure_image(&self, docker: &Docker, s: &Settings) -> Result<(), ProviderError> {
        let key = (s.host.clone(), s.image.clone());
        if self.images.lock().is_ok_and(|known| known.contains(&key)) {
            return Ok(());
        }
        let found = self.find_or_pull(docker, s).await;
        if found.is_ok() {
            if let Ok(mut known) = self.images.lock() {
                known.insert(key);
            }
        }
        found
    }

    async fn find_or_pull(&self, docker: &Docker, s: &Settings) -> Result<(), ProviderError> {
        match docker.inspect_image(&s.image).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) && s.pull => {
                let options = CreateImageOptions {
                    from_image: Some(s.image.clone()),
                    ..Default::default()
                };
                let mut pulling = docker.create_image(Some(options), None, None);
                while let Some(step) = pulling.next().await {
                    step.map_err(|e| backend(format!("cannot pull image {} on {}: {e}", s.image, s.host)))?;
                }
                Ok(())
            }
            Err(e) if is_not_found(&e) => Err(backend(format!(
                "image {} is not on the Docker engine at {}: build or load it there (tend pulls only with pull = True)",
                s.image, s.host
            ))),
            Err(e) => Err(backend(format!("cannot inspect image {} on {}: {e}", s.image, s.host))),
        }
    }

    /// The live container of `project` made under idempotency key `key`, if one is.
    async fn made_under(
        &self,
        host: &str,
        project: &str,
        key: &str,
    ) -> Result<Option<String>, ProviderError> {
        let labels = vec![
            format!("{}={project}", tags::PROJECT),
            format!("{}={key}", tags::KEY),
        ];
        let list = self.list(host, labels, false).await?;
        Ok(list.into_iter().find_map(|c| c.id.map(|id| short(&id))))
    }

    /// The containers on one engine carrying every label of `labels` (`key=value`), those
    /// that exited too when `all`.
    async fn list(
        &self,
        host: &str,
        labels: Vec<String>,
        all: bool,
    ) -> Result<Vec<bollard::models::ContainerSummary>, ProviderError> {
        let docker = self.client(host).await?;
        let options = ListContainersOptions {
            all,
            filters: Some(HashMap::from([("label".to_owned(), labels)])),
            ..Default::default()
        };
        docker
            .list_containers(Some(options))
            .await
            .map_err(|e| backend(format!("cannot list containers on {host}: {e}")))
    }

    /// The project's containers on one engine.
    async fn describe_on(
        &self,
        host: &str,
        selector: &Selector,
    ) -> Result<Vec<ObservedInstance>, ProviderError> {
        let labels = vec![format!("{}={}", tags::PROJECT, selector.project)];
        let list = self.list(host, labels, true).await?;
        let docker = self.client(host).await?;
        let mut found: Vec<ObservedInstance> = list
            .into_iter()
            .filter(|c| c.labels.as_ref().is_none_or(|l| !l.contains_key(VIA)))
            .filter_map(observed)
            .collect();
        // Why a stopped container ended is only in its details: ask for the dead ones.
        for instance in found.iter_mut().filter(|i| i.state == InstanceState::Dead) {
            if let Ok(details) = docker.inspect_container(&instance.id, None).await {
                let oom = details.state.and_then(|s| s.oom_killed).unwrap_or(false);
                instance.ended = oom.then(|| "oom".to_owned());
            }
        }
        Ok(found)
    }

    /// Writes the flavor's files to a folder that is mounted as the container's working folder.
    fn write_files(
        &self,
        name: &str,
        files: &BTreeMap<String, String>,
    ) -> Result<Option<PathBuf>, ProviderError> {
        if files.is_empty() {
            return Ok(None);
        }
        let dir = self.dir.join("files").join(name);
        crate::files::write_into(NAME, &dir, files)?;
        let absolute = dir
            .canonicalize()
            .map_err(|e| backend(format!("cannot resolve {}: {e}", dir.display())))?;
        Ok(Some(absolute))
    }

    /// Removes what a container named `name` had mounted: its flavor files on disk and its
    /// secret files in memory. Called when it is removed, or was never made.
    fn remove_files(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.dir.join("files").join(name));
        crate::files::remove_secrets(&secrets_name(name));
    }
}

/// The folder of a container's secret files in memory.
fn secrets_name(container: &str) -> String {
    format!("docker-{container}")
}

/// The engine's limits for `resources`: memory (and no swap beyond it), CPU in
/// nano-cores, and a cap on processes.
fn limits(resources: Option<&engine::spec::Resources>) -> HostConfig {
    let Some(r) = resources else {
        return HostConfig::default();
    };
    let memory = r.memory.and_then(|m| i64::try_from(m).ok());
    HostConfig {
        memory,
        memory_swap: memory,
        nano_cpus: r.cpu.map(|c| (c * 1e9).round() as i64),
        pids_limit: r.pids.and_then(|p| i64::try_from(p).ok()),
        ..Default::default()
    }
}

/// A container as an instance: its labels as tags, its own ports as published on
/// 127.0.0.1, and its address; `None` without an id.
pub(crate) fn observed(c: bollard::models::ContainerSummary) -> Option<ObservedInstance> {
    let labels: BTreeMap<String, String> =
        c.labels.clone().unwrap_or_default().into_iter().collect();
    let tags = InstanceTags::from_map(&labels);
    let public = |inside: u16| {
        c.ports.iter().flatten().find_map(|p| {
            (p.private_port == inside)
                .then_some(p.public_port)
                .flatten()
        })
    };
    let ports: BTreeMap<String, u16> = tags
        .ports
        .iter()
        .filter_map(|(name, inside)| Some((name.clone(), public(*inside)?)))
        .collect();
    // The address port comes first in the tags; without own ports, the lowest
    // published one.
    let address = tags
        .ports
        .first()
        .and_then(|(name, _)| ports.get(name).copied())
        .or_else(|| {
            c.ports
                .as_ref()
                .and_then(|ports| ports.iter().filter_map(|p| p.public_port).min())
        })
        .map(|port| format!("127.0.0.1:{port}"));
    Some(ObservedInstance {
        id: short(&c.id?),
        tags,
        labels: labels
            .into_iter()
            .filter(|(k, _)| !k.starts_with("tend."))
            .collect(),
        address,
        ports,
        state: state_of(c.state.as_ref()),
        started_at: c.created.unwrap_or(0).max(0) as u64 * 1000,
        ended: None,
        remains: 0,
    })
}

/// True when the container runs.
pub(crate) fn is_running(c: &bollard::models::ContainerSummary) -> bool {
    state_of(c.state.as_ref()).is_live()
}

fn state_of(state: Option<&ContainerSummaryStateEnum>) -> InstanceState {
    match state {
        Some(ContainerSummaryStateEnum::RUNNING) => InstanceState::Running,
        Some(ContainerSummaryStateEnum::RESTARTING) => InstanceState::Starting,
        _ => InstanceState::Dead,
    }
}

#[async_trait]
impl Provider for DockerProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn validate(&self, props: &BTreeMap<String, serde_json::Value>) -> Result<(), ProviderError> {
        // Ports may be templates rendered per instance: check their shape when provisioning.
        let mut shape = props.clone();
        shape.remove("ports");
        let s = settings(&shape)?;
        if let Ok(mut hosts) = self.hosts.lock() {
            hosts.insert(s.host, true);
        }
        self.watch_new_hosts();
        Ok(())
    }

    async fn provision(&self, request: ProvisionRequest) -> Result<String, ProviderError> {
        require_tags(NAME, &request)?;
        let s = settings(&request.props)?;
        let docker = self.client(&s.host).await?;
        if let Some(key) = request.labels.get(tags::KEY) {
            if let Some(made) = self.made_under(&s.host, &request.tags.project, key).await? {
                return Ok(made);
            }
        }
        self.ensure_image(&docker, &s).await?;
        let t = &request.tags;
        let name = format!(
            "tend-{}-{}-{}-{}",
            t.project,
            t.group,
            t.slot,
            crate::random_word()
        );
        let mut labels: HashMap<String, String> = request.labels.clone().into_iter().collect();
        labels.extend(t.to_map());
        // The instance's own ports: each published on a host port the engine picks.
        let mut published: Vec<(u16, u16)> = s.ports.clone();
        for (_, port) in &t.ports {
            if !published.iter().any(|(inside, _)| inside == port) {
                published.push((*port, 0));
            }
        }
        let mut bindings = HashMap::new();
        for (inside, outside) in &published {
            let host_port = if *outside == 0 {
                String::new()
            } else {
                outside.to_string()
            };
            bindings.insert(
                format!("{inside}/tcp"),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".to_owned()),
                    host_port: Some(host_port),
                }]),
            );
        }
        let workdir = request
            .workdir
            .clone()
            .unwrap_or_else(|| "/tend".to_owned());
        let mut binds: Vec<String> = self
            .write_files(&name, &request.files)?
            .map(|dir| format!("{}:{workdir}:ro", dir.display()))
            .into_iter()
            .collect();
        // Secret files: from memory, one read-only mount each; never in the container's
        // configuration (where `docker inspect` would show an env value).
        if !request.secret_files.is_empty() {
            let secrets =
                crate::files::write_secrets(NAME, &secrets_name(&name), &request.secret_files)
                    .inspect_err(|_| self.remove_files(&name))?;
            for path in request.secret_files.keys() {
                binds.push(format!(
                    "{}:{}/{path}:ro",
                    secrets.join(path).display(),
                    workdir.trim_end_matches('/')
                ));
            }
        }
        let binds = (!binds.is_empty()).then_some(binds);
        let config = ContainerCreateBody {
            image: Some(s.image.clone()),
            cmd: (!request.command.is_empty()).then(|| request.command.clone()),
            env: Some(
                request
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ),
            labels: Some(labels),
            working_dir: (request.workdir.is_some() || binds.is_some()).then_some(workdir),
            exposed_ports: Some(
                published
                    .iter()
                    .map(|(inside, _)| format!("{inside}/tcp"))
                    .collect(),
            ),
            stop_timeout: Some((request.stop_timeout.as_millis() / 1000).max(1) as i64),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                network_mode: s.network.clone(),
                binds,
                init: Some(true),
                ..limits(request.resources.as_ref())
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let created = match docker.create_container(Some(options), config).await {
            Ok(c) => c,
            Err(e) => {
                self.remove_files(&name);
                return Err(backend(format!("cannot create container {name}: {e}")));
            }
        };
        if let Err(e) = docker.start_container(&created.id, None).await {
            // Never leave a half-made instance behind: it carries tags, but remove it anyway.
            let _ = docker
                .remove_container(
                    &created.id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
            self.remove_files(&name);
            return Err(backend(format!("cannot start container {name}: {e}")));
        }
        Ok(short(&created.id))
    }

    fn publishes_ports(&self) -> bool {
        true
    }

    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        for (host, required) in self.hosts() {
            let docker = match self.client(&host).await {
                Ok(d) => d,
                Err(_) if !required => continue,
                Err(e) => return Err(e),
            };
            match docker
                .stop_container(id, None::<StopContainerOptions>)
                .await
            {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => continue,
                // 304: already stopped.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 304, ..
                }) => {}
                Err(e) => return Err(backend(format!("cannot stop container {id}: {e}"))),
            }
            let name = docker
                .inspect_container(id, None)
                .await
                .ok()
                .and_then(|c| c.name)
                .map(|n| n.trim_start_matches('/').to_owned());
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            let removed = match docker.remove_container(id, Some(options)).await {
                Ok(()) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(backend(format!("cannot remove container {id}: {e}"))),
            };
            if let (Ok(()), Some(name)) = (&removed, name) {
                self.remove_files(&name);
            }
            return removed;
        }
        Err(ProviderError::NotFound {
            provider: NAME.to_owned(),
            id: id.to_owned(),
        })
    }

    /// The engine's start of the exited container: the same container, with its id,
    /// labels, configuration and mounts. Its published ports stay published; a port the
    /// engine picked may come back as another host port, which `describe` tells.
    async fn restart(&self, id: &str) -> Result<bool, ProviderError> {
        for (host, required) in self.hosts() {
            let docker = match self.client(&host).await {
                Ok(d) => d,
                Err(_) if !required => continue,
                Err(e) => return Err(e),
            };
            match docker.start_container(id, None).await {
                // 304: it runs already.
                Ok(())
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 304, ..
                }) => return Ok(true),
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(backend(format!("cannot start container {id} again: {e}"))),
            }
        }
        Err(ProviderError::NotFound {
            provider: NAME.to_owned(),
            id: id.to_owned(),
        })
    }

    async fn alive(&self, id: &str, _selector: &Selector) -> Result<bool, ProviderError> {
        for (host, required) in self.hosts() {
            let docker = match self.client(&host).await {
                Ok(d) => d,
                Err(_) if !required => continue,
                Err(e) => return Err(e),
            };
            match docker.inspect_container(id, None).await {
                Ok(c) => return Ok(c.state.and_then(|s| s.running).unwrap_or(false)),
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(backend(format!("cannot inspect container {id}: {e}"))),
            }
        }
        Ok(false)
    }

    async fn describe(&self, selector: &Selector) -> Result<Vec<ObservedInstance>, ProviderError> {
        let mut all: Vec<ObservedInstance> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (host, required) in self.hosts() {
            match self.describe_on(&host, selector).await {
                // One engine reached two ways (its socket, and tcp) shows each container
                // twice: it is one instance.
                Ok(found) => all.extend(found.into_iter().filter(|i| seen.insert(i.id.clone()))),
                // An engine no spec named, that does not answer, holds nothing of ours.
                Err(_) if !required => {}
                Err(e) => return Err(e),
            }
        }
        Ok(all)
    }

    async fn watch(
        &self,
        selector: &Selector,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<ProviderEvent>>, ProviderError> {
        let (events, receiver) = tokio::sync::mpsc::channel(1024);
        if let Ok(mut watching) = self.watching.lock() {
            *watching = Some((selector.project.clone(), events));
        }
        if let Ok(mut watched) = self.watched.lock() {
            watched.clear();
        }
        self.watch_new_hosts();
        Ok(Some(receiver))
    }
}

/// Follows one engine's event stream for the project's containers, reconnecting when the
/// engine comes back, until nobody listens.
async fn follow_events(
    host: String,
    project: String,
    events: tokio::sync::mpsc::Sender<ProviderEvent>,
) {
    let mut pause = Duration::from_millis(500);
    loop {
        let connected = match Docker::connect_with_unix(&host, 120, API_DEFAULT_VERSION) {
            Ok(d) => d.negotiate_version().await.ok(),
            Err(_) => None,
        };
        if let Some(docker) = connected {
            pause = Duration::from_millis(500);
            let mut filters = HashMap::new();
            filters.insert("type".to_owned(), vec!["container".to_owned()]);
            filters.insert(
                "label".to_owned(),
                vec![format!("{}={project}", tags::PROJECT)],
            );
            filters.insert(
                "event".to_owned(),
                vec!["die".to_owned(), "destroy".to_owned(), "start".to_owned()],
            );
            let mut stream = docker.events(Some(EventsOptions {
                filters: Some(filters),
                ..Default::default()
            }));
            while let Some(Ok(event)) = stream.next().await {
                let id = short(&event.actor.and_then(|a| a.id).unwrap_or_default());
                let message = match event.action.as_deref() {
                    Some("start") => ProviderEvent::Changed,
                    _ => ProviderEvent::Gone { id, why: None },
                };
                if events.send(message).await.is_err() {
                    return;
                }
            }
            // The stream ended: the engine went away. Say so, then reconnect.
            if events.send(ProviderEvent::Changed).await.is_err() {
                return;
            }
        }
        if events.is_closed() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}
