//! Data-parallel training on burn's collective engine: N peers (threads
//! of this process, one per device; optionally several processes, one per
//! node), each with a replica of the model and optimisers. Every peer
//! computes the loss and gradients of its share of each micro-batch; the
//! gradients of the trainable tensors are summed over the peers
//! (`GradientsParams::all_reduce`), and every peer applies the same
//! optimiser update, so the replicas stay equal without ever sending a
//! weight. For LoRA-XS that sum is r² values per adapted module (plus the
//! head): a few KiB per step.
//!
//! The loss of a share is scaled by the share's part of the step (its
//! examples, or its response tokens for a causal LM), so the sum over the
//! peers is the step's loss and gradient whatever the split: 1, 2 or 4
//! peers give the same run up to float rounding (with dropout off;
//! with dropout on, the masks differ, the distribution does not).

use std::sync::Mutex;

use burn::collective::{
    AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation, all_reduce, finish_collective, register,
    reset_collective,
};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use crate::TrainError;
use crate::optim::Optimizers;

/// Several processes (nodes, e.g. one per machine) training one run
/// together, each with its own [`DataParallel::devices`] peers.
///
/// A separate process runs the collective's orchestrator
/// ([`run_orchestrator`], `loraxs-experiments orchestrator --port P`);
/// every node names it, says how the others reach this node, and which
/// node it is. Node 0 evaluates and writes checkpoints and the record;
/// every node reads the same data and (to resume) the same checkpoint
/// folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodes {
    /// Nodes in the run.
    pub count: u32,
    /// This node, `0..count`.
    pub rank: u32,
    /// The orchestrator, `ws://host:port`.
    pub orchestrator: String,
    /// This node's address as the other nodes reach it, `ws://host:port`,
    /// the port being [`Nodes::data_port`].
    pub address: String,
    /// The port this node serves its tensors on.
    pub data_port: u16,
}

/// How many peers train a run: `devices` threads in this process (one per
/// device; on the CPU they share the cores), times the nodes.
///
/// ```
/// use loraxs_train::DataParallel;
///
/// let alone = DataParallel::default();
/// assert_eq!((alone.devices(), alone.peers()), (1, 1));
/// let two = DataParallel::new(2);
/// assert_eq!(two.peers(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataParallel {
    devices: usize,
    /// Other processes taking part, if any.
    pub nodes: Option<Nodes>,
}

impl DataParallel {
    /// `devices` peers in this process (0 counts as 1).
    pub fn new(devices: usize) -> Self {
        Self { devices, nodes: None }
    }

    /// Peers in this process.
    pub fn devices(&self) -> usize {
        self.devices.max(1)
    }

    /// Peers over all nodes.
    pub fn peers(&self) -> usize {
        self.devices() * self.nodes.as_ref().map_or(1, |n| n.count as usize)
    }

    /// Whether this process writes the record and checkpoints (node 0).
    pub fn leads(&self) -> bool {
        self.nodes.as_ref().is_none_or(|n| n.rank == 0)
    }

    /// Checks the settings (a node rank within the count, addresses given).
    pub fn check(&self) -> Result<(), TrainError> {
        if let Some(n) = &self.nodes {
            if n.count == 0 || n.rank >= n.count {
                return Err(TrainError::Parallel(format!(
                    "node rank {} of {} nodes: the rank must be in 0..{}",
                    n.rank, n.count, n.count
                )));
            }
            for (what, address) in [("orchestrator", &n.orchestrator), ("node address", &n.address)] {
                if !address.starts_with("ws://") || address.len() <= "ws://".len() {
                    return Err(TrainError::Parallel(format!(
                        "{what} `{address}`: expected ws://host:port"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The devices of `n` peers, the first being `first`: the same device on a
/// CPU backend (the peers share its cores), consecutive indices on a GPU
/// backend (`cuda:0`, `cuda:1`, …).
pub fn peer_devices<B: Backend>(first: &B::Device, n: usize) -> Vec<B::Device> {
    use burn::tensor::backend::{Device, DeviceId};
    let id = first.to_id();
    (0..n.max(1))
        .map(|i| B::Device::from_id(DeviceId::new(id.type_id, id.index_id + i as u16)))
        .collect()
}

/// One peer's model, optimisers and device.
pub(crate) struct Replica<B: AutodiffBackend, M: AutodiffModule<B>> {
    pub(crate) model: M,
    pub(crate) optims: Optimizers<B, M>,
    pub(crate) device: B::Device,
}

/// A peer of a data-parallel run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    /// 0-based over all nodes; peer 0 leads.
    pub(crate) index: usize,
    /// Peers over all nodes.
    pub(crate) count: usize,
    /// Whether this peer seeds the process-wide random generators (one
    /// per process).
    pub(crate) seeds: bool,
}

impl Peer {
    /// The one peer of a run that is not data-parallel.
    pub(crate) const ALONE: Peer = Peer {
        index: 0,
        count: 1,
        seeds: true,
    };

    /// Whether this peer evaluates, reports and writes checkpoints.
    pub(crate) fn leads(&self) -> bool {
        self.index == 0
    }

    /// This peer's contiguous share of `micro`, the shares as equal as
    /// they can be (empty when there are fewer examples than peers).
    pub(crate) fn shard<'a>(&self, micro: &'a [usize]) -> &'a [usize] {
        let n = micro.len();
        &micro[self.index * n / self.count..(self.index + 1) * n / self.count]
    }

    fn id(&self) -> PeerId {
        PeerId::from(self.index as u32)
    }

    /// `values` summed over the peers (each sends its own).
    pub(crate) fn sum<B: Backend, const N: usize>(
        &self,
        values: [f64; N],
        device: &B::Device,
    ) -> Result<[f64; N], TrainError> {
        let data = TensorData::new(values.map(|v| v as f32).to_vec(), [N]);
        let tensor = Tensor::<B, 1>::from_data(data, device).into_primitive().tensor();
        let summed =
            all_reduce::<B>(self.id(), tensor, ReduceOperation::Sum).map_err(|e| collective(self, &e))?;
        let summed = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(summed)).into_data();
        let summed = summed
            .to_vec::<f32>()
            .map_err(|e| TrainError::Parallel(format!("{e:?}")))?;
        let mut out = [0.0; N];
        for (o, v) in out.iter_mut().zip(summed) {
            *o = v as f64;
        }
        Ok(out)
    }

    /// The step's gradients summed over the peers.
    pub(crate) fn sum_gradients<B: Backend>(
        &self,
        grads: GradientsParams,
    ) -> Result<GradientsParams, TrainError> {
        grads
            .all_reduce::<B>(self.id(), ReduceOperation::Sum)
            .map_err(|e| collective(self, &e))
    }
}

fn collective(peer: &Peer, e: &dyn std::fmt::Debug) -> TrainError {
    TrainError::Parallel(format!("peer {}: burn's collective failed: {e:?}", peer.index))
}

/// The collective engine of a backend is one per process: one
/// data-parallel run at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `peer_run` on every replica, each in its own thread registered with
/// burn's collective as peer `node rank × devices + i`, and returns the
/// results in replica order (the leader's first). Every peer unregisters
/// when done, whatever its result.
pub(crate) fn on_peers<B, M, T, F>(
    setup: &DataParallel,
    replicas: Vec<Replica<B, M>>,
    peer_run: F,
) -> Result<Vec<Result<T, TrainError>>, TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    T: Send,
    F: Fn(Replica<B, M>, Peer) -> Result<T, TrainError> + Sync,
    Optimizers<B, M>: Send,
{
    setup.check()?;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let local = replicas.len();
    let mut config = CollectiveConfig::default().with_num_devices(local);
    let node_rank = match &setup.nodes {
        Some(n) => {
            let parse = |what: &str, a: &str| {
                a.parse()
                    .map_err(|e| TrainError::Parallel(format!("{what} `{a}`: {e}")))
            };
            // A binary tree between nodes, not burn's default ring: burn
            // 0.21's global ring refuses a tensor with fewer rows than
            // nodes (the step's 1–3 summed numbers, a 2-class head's bias
            // on 3 nodes), and LoRA-XS's gradients are KiB, where a ring's
            // bandwidth advantage does not matter.
            config = config
                .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2))
                .with_num_nodes(n.count)
                .with_global_address(parse("orchestrator", &n.orchestrator)?)
                .with_node_address(parse("node address", &n.address)?)
                .with_data_service_port(n.data_port);
            n.rank as usize
        }
        None => 0,
    };
    let count = setup.peers();
    reset_collective::<B::InnerBackend>();
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = replicas
            .into_iter()
            .enumerate()
            .map(|(i, replica)| {
                let peer = Peer {
                    index: node_rank * local + i,
                    count,
                    seeds: i == 0,
                };
                let config = config.clone();
                let peer_run = &peer_run;
                scope.spawn(move || {
                    let device = replica.device.clone();
                    register::<B::InnerBackend>(peer.id(), device, config)
                        .map_err(|e| collective(&peer, &e))?;
                    let result = peer_run(replica, peer);
                    let finished = finish_collective::<B::InnerBackend>(peer.id());
                    let out = result?;
                    finished.map_err(|e| collective(&peer, &e))?;
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                h.join().unwrap_or_else(|panic| {
                    Err(TrainError::Parallel(format!(
                        "peer {} panicked: {}",
                        node_rank * local + i,
                        crate::engine::panic_message(&panic)
                    )))
                })
            })
            .collect()
    });
    reset_collective::<B::InnerBackend>();
    Ok(results)
}

/// Runs burn's collective orchestrator on `port` (all interfaces) until the
/// process is interrupted: the meeting point of the nodes of a multi-node
/// run ([`Nodes::orchestrator`]).
pub fn run_orchestrator(port: u16) -> Result<(), TrainError> {
    let runtime = tokio_runtime()?;
    runtime.block_on(burn_collective::start_global_orchestrator(port));
    Ok(())
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, TrainError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| TrainError::Parallel(format!("cannot start the orchestrator's runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_a_micro_batch_once_and_evenly() {
        let micro: Vec<usize> = (10..42).collect();
        for count in [1, 2, 3, 4, 5, 32, 40] {
            let shares: Vec<&[usize]> = (0..count)
                .map(|index| {
                    Peer {
                        index,
                        count,
                        seeds: false,
                    }
                    .shard(&micro)
                })
                .collect();
            assert_eq!(shares.concat(), micro, "{count} peers");
            let (min, max) = (
                shares.iter().map(|s| s.len()).min().unwrap(),
                shares.iter().map(|s| s.len()).max().unwrap(),
            );
            assert!(max - min <= 1, "{count} peers: {min}..{max}");
        }
    }

    #[test]
    fn node_settings_are_checked() {
        let mut setup = DataParallel::new(2);
        assert!(setup.check().is_ok() && setup.leads());
        setup.nodes = Some(Nodes {
            count: 2,
            rank: 1,
            orchestrator: "ws://127.0.0.1:3000".into(),
            address: "ws://127.0.0.1:3001".into(),
            data_port: 3001,
        });
        assert!(setup.check().is_ok());
        assert_eq!(setup.peers(), 4);
        assert!(!setup.leads());
        let mut bad = setup.clone();
        bad.nodes.as_mut().unwrap().rank = 2;
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("rank must be in 0..2")
        );
        let mut bad = setup;
        bad.nodes.as_mut().unwrap().orchestrator = "127.0.0.1:3000".into();
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("expected ws://host:port")
        );
    }
}
