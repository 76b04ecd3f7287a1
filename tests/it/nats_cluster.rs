//! A 3-node NATS JetStream cluster on loopback for the team-scale tests: real `nats-server`
//! processes with routes between them and a store dir each, ready when their monitoring
//! endpoint says so, SIGKILL and restart of one node, everything killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, free_port, get};

/// How long a node may take to form or rejoin the cluster with JetStream current.
pub const NATS_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often readiness is asked while a node starts (each ask is one loopback request).
const READY_POLL: Duration = Duration::from_millis(25);
/// Nodes in the cluster: the smallest that keeps a quorum with one node down.
pub const CLUSTER_SIZE: usize = 3;

/// The `nats-server` binary (as the single-node helper finds it); `None` after
/// [`common::cannot_run`] (which fails in CI) when there is none.
pub fn nats_server_binary() -> Option<PathBuf> {
    crate::nats_server::nats_server_binary()
        .map_err(|why| common::cannot_run(&why))
        .ok()
}

/// One node: its ports, its files, and its process while it runs.
pub struct Node {
    pub name: String,
    pub client_port: u16,
    pub monitor_port: u16,
    pub conf: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// `nats://127.0.0.1:PORT`, the URL clients use.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A running cluster of [`CLUSTER_SIZE`] nodes; every node is killed on drop.
pub struct NatsCluster {
    binary: PathBuf,
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts [`CLUSTER_SIZE`] nodes and returns once every one reports JetStream ready;
    /// `None` when there is no `nats-server` here (outside CI only, see [`nats_server_binary`]).
    pub fn start() -> Option<NatsCluster> {
        Self::start_nodes(CLUSTER_SIZE, true)
    }

    /// One JetStream server without a cluster (the fault tests stop and restart it).
    pub fn single() -> Option<NatsCluster> {
        Self::start_nodes(1, true)
    }

    /// One server with JetStream off (what `cco doctor` must catch).
    pub fn single_without_jetstream() -> Option<NatsCluster> {
        Self::start_nodes(1, false)
    }

    fn start_nodes(size: usize, jetstream: bool) -> Option<NatsCluster> {
        let binary = nats_server_binary()?;
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..size)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = if size == 1 {
            Vec::new()
        } else {
            ports
                .iter()
                .map(|(_, cluster, _)| format!("\"nats-route://127.0.0.1:{cluster}\""))
                .collect()
        };
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, &(client_port, cluster_port, monitor_port))| {
                let name = format!("n{}", i + 1);
                let store = dir.path().join(&name).join("jetstream");
                std::fs::create_dir_all(&store).unwrap();
                let conf = dir.path().join(&name).join("nats.conf");
                std::fs::write(
                    &conf,
                    node_config(
                        &name,
                        client_port,
                        cluster_port,
                        monitor_port,
                        jetstream.then_some(store.as_path()),
                        &routes,
                    ),
                )
                .unwrap();
                Node {
                    log: dir.path().join(&name).join("nats.log"),
                    name,
                    client_port,
                    monitor_port,
                    conf,
                    child: None,
                }
            })
            .collect();
        let mut cluster = NatsCluster {
            binary,
            nodes,
            _dir: dir,
        };
        // All first, then wait: a node is not ready before it sees a quorum.
        for i in 0..size {
            cluster.spawn(i);
        }
        for i in 0..size {
            cluster.wait_ready(i);
        }
        Some(cluster)
    }

    /// Every node's client URL, comma-separated (`CCO_NATS_SERVERS`).
    pub fn servers_env(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} is already running", node.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        node.child = Some(child);
    }

    /// Waits until node `i` answers `/healthz` with 200: client port up, JetStream enabled,
    /// the meta group has a leader and this node's streams are current.
    pub fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + NATS_READY_TIMEOUT;
        let node = &mut self.nodes[i];
        loop {
            if let Some(status) = node.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "{} exited with {status} while starting; log:\n{}",
                    node.name,
                    node.log_text()
                );
            }
            if let Some((200, _)) = try_get(node.monitor_port, "/healthz") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} was not ready in {:?}; log:\n{}",
                node.name,
                NATS_READY_TIMEOUT,
                node.log_text()
            );
            std::thread::sleep(READY_POLL);
        }
    }

    /// Waits until every running node names a running node as the JetStream meta leader
    /// (after a kill, the survivors notice the lost leader only after their election timeout).
    pub fn wait_for_leader(&self) {
        let deadline = Instant::now() + NATS_READY_TIMEOUT;
        loop {
            let running: Vec<&str> = self
                .nodes
                .iter()
                .filter(|n| n.is_running())
                .map(|n| n.name.as_str())
                .collect();
            let settled = self.nodes.iter().all(|n| {
                !n.is_running()
                    || try_get(n.monitor_port, "/jsz").is_some_and(|(status, body)| {
                        status == 200
                            && serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|j| {
                                j["meta_cluster"]["leader"]
                                    .as_str()
                                    .is_some_and(|l| running.contains(&l))
                            })
                    })
            });
            if settled {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no meta leader among {running:?} in {NATS_READY_TIMEOUT:?}"
            );
            std::thread::sleep(READY_POLL);
        }
    }

    /// SIGKILL node `i`, as a crash or a pulled cable would; its store dir stays.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again with the same ports and store dir; returns once it rejoined
    /// with JetStream current.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_ready(i);
    }

    /// The node that leads `stream`'s replicas, as a running node reports it.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        let node = self.nodes.iter().position(Node::is_running)?;
        let jsz = self.monitor(node, "/jsz?accounts=true&streams=true");
        let leader = jsz["account_details"]
            .as_array()?
            .iter()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
            .find(|s| s["name"] == stream)?["cluster"]["leader"]
            .as_str()?
            .to_string();
        self.nodes.iter().position(|n| n.name == leader)
    }

    /// A monitoring endpoint of node `i` (`/jsz`, `/routez`, …) as JSON.
    pub fn monitor(&self, i: usize, path: &str) -> serde_json::Value {
        let (status, body) = get(self.nodes[i].monitor_port, path);
        assert_eq!(status, 200, "{path} on {}: {body}", self.nodes[i].name);
        serde_json::from_str(&body).unwrap()
    }

    /// Deletes every consumer of `stream` on the server (what a sidecar's follower sees
    /// when the node holding its ordered consumer dies): returns how many there were.
    pub fn delete_consumers(&self, stream: &str) -> usize {
        let url = self.servers_env();
        let stream = stream.to_string();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                use futures_util::StreamExt;
                let client = async_nats::connect(url).await.unwrap();
                let js = async_nats::jetstream::new(client);
                let mut s = js.get_stream(&stream).await.unwrap();
                let names: Vec<String> = s.consumer_names().map(|n| n.unwrap()).collect().await;
                for n in &names {
                    s.delete_consumer(n).await.unwrap();
                }
                let _ = s.info().await.unwrap();
                names.len()
            })
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// The node's config: loopback only, JetStream with its own store, routes to every node
/// (a node ignores the route to itself); no cluster block without routes, no JetStream
/// without a store.
fn node_config(
    name: &str,
    client: u16,
    cluster: u16,
    monitor: u16,
    store: Option<&Path>,
    routes: &[String],
) -> String {
    let mut conf = format!(
        "server_name: {name}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{monitor}\"\n"
    );
    if let Some(store) = store {
        conf.push_str(&format!(
            "jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}\n",
            store.display()
        ));
    }
    if !routes.is_empty() {
        conf.push_str(&format!(
            "cluster {{\n  name: cco-test\n  listen: \"127.0.0.1:{cluster}\"\n  routes: [{}]\n}}\n",
            routes.join(", ")
        ));
    }
    conf
}

/// [`get`] that reports a refused connection instead of panicking (a node still starting).
fn try_get(port: u16, path: &str) -> Option<(u16, String)> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    Some(get(port, path))
}

#[test]
fn a_cluster_forms_loses_a_node_keeps_quorum_and_takes_it_back() {
    let Some(mut cluster) = NatsCluster::start() else {
        return;
    };
    for i in 0..CLUSTER_SIZE {
        let routes = cluster.monitor(i, "/routez");
        assert_eq!(
            routes["num_routes"].as_u64().map(|n| n >= 2),
            Some(true),
            "{routes}"
        );
        let jsz = cluster.monitor(i, "/jsz");
        assert_eq!(
            jsz["meta_cluster"]["cluster_size"], CLUSTER_SIZE as u64,
            "{jsz}"
        );
    }
    cluster.kill(1);
    assert!(!cluster.nodes[1].is_running());
    assert!(std::net::TcpStream::connect(("127.0.0.1", cluster.nodes[1].client_port)).is_err());
    // Two of three keep a meta leader: the survivors stay healthy.
    cluster.wait_for_leader();
    for i in [0, 2] {
        cluster.wait_ready(i);
        let jsz = cluster.monitor(i, "/jsz");
        assert!(
            jsz["meta_cluster"]["leader"]
                .as_str()
                .is_some_and(|l| l != "n2"),
            "{jsz}"
        );
    }
    cluster.restart(1);
    let jsz = cluster.monitor(1, "/jsz");
    assert_eq!(
        jsz["meta_cluster"]["cluster_size"], CLUSTER_SIZE as u64,
        "{jsz}"
    );
    assert_eq!(
        cluster.servers_env().split(',').count(),
        CLUSTER_SIZE,
        "{}",
        cluster.servers_env()
    );
}
