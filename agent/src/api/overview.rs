//! `GET /overview`: this board in the status page's shape ([`api_types::overview`]), read fresh on
//! every call — telemetry from sysfs (as `/metrics` does), queues from the scheduler, token totals
//! from the generation metrics, and in cluster mode every assigned model's phase. The gateway
//! reads it too, for the live part of each board on its own page.

use std::sync::{Arc, OnceLock};

use api_types::overview::{
    BoardOverview, BoardState, Clock, MemoryOverview, ModelOverview, Overview, OverviewSource, Temperature, now_ms,
};
use board::Telemetry;

use super::AppState;
use crate::{cluster::ModelStates, metrics::model};

/// What cluster mode adds: the Board's name and endpoint, and the assigned models' states. Set
/// once when cluster mode starts.
pub type ClusterView = Arc<OnceLock<ClusterParts>>;

pub struct ClusterParts {
    pub board: String,
    pub endpoint: String,
    pub states: Arc<ModelStates>,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "this board".to_owned())
}

fn clocks(t: &Telemetry) -> Vec<Clock> {
    let cpus = t.cpu.iter().map(|c| {
        let (first, last) = (c.cpus.first(), c.cpus.last());
        let range = match (first, last) {
            (Some(a), Some(b)) if a != b => format!(" (cpu{a}-{b})"),
            (Some(a), _) => format!(" (cpu{a})"),
            _ => String::new(),
        };
        Clock { name: format!("{}{range}", c.policy), hz: c.cur_khz.map(|k| k * 1000), governor: c.governor.clone() }
    });
    let devfreq = [("npu", &t.npu), ("ddr", &t.ddr), ("gpu", &t.gpu)].into_iter().filter_map(|(name, d)| {
        d.as_ref().map(|d| Clock { name: name.to_owned(), hz: d.cur_hz, governor: d.governor.clone() })
    });
    cpus.chain(devfreq).collect()
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Builds this board's overview.
pub fn build(st: &AppState) -> Overview {
    let t = Telemetry::read(&st.node.fs);
    let host = st.node.host();
    let sched = st.serve.sched();
    let tokens = &st.serve.metrics().generated_tokens;
    let cluster = st.cluster_view.get();
    let mut models: Vec<ModelOverview> = sched
        .residents()
        .iter()
        .map(|r| ModelOverview {
            name: r.entry.name.clone(),
            phase: "Ready".to_owned(),
            loaded: true,
            engine: Some(r.engine.to_owned()),
            running: count(r.running()),
            waiting: count(r.waiting()),
            slots: count(r.slot_count()),
            generated_tokens: tokens.get_or_create(&model(&r.entry.name)).get(),
            ..ModelOverview::default()
        })
        .collect();
    // Cluster mode: every assigned model with its phase; resident ones gain their deployment.
    if let Some(c) = cluster {
        for s in c.states.snapshot() {
            let name = c.states.name_of(&s.key).unwrap_or_else(|| s.key.clone());
            let phase = format!("{:?}", s.phase);
            match models.iter_mut().find(|m| m.name == name) {
                Some(m) => {
                    m.deployment = Some(s.key.clone());
                    m.phase = phase;
                    m.message = s.message.clone();
                }
                None => models.push(ModelOverview {
                    name,
                    deployment: Some(s.key.clone()),
                    phase,
                    progress: s.progress,
                    loaded: false,
                    message: s.message.clone(),
                    ..ModelOverview::default()
                }),
            }
        }
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    let ready = st.is_ready();
    let board = BoardOverview {
        name: cluster.map_or_else(host_name, |c| c.board.clone()),
        soc: Some(st.node.info.soc.as_ref().map_or_else(|| "cpu".to_owned(), |s| s.id().to_owned())),
        endpoint: cluster.map(|c| c.endpoint.clone()),
        state: if ready { BoardState::Ready } else { BoardState::NotReady },
        message: (!ready).then(|| "starting up or shutting down".to_owned()),
        live: true,
        temperatures: t.thermal.iter().map(|z| Temperature { zone: z.kind.clone(), celsius: z.celsius }).collect(),
        max_celsius: t.thermal.iter().map(|z| z.celsius).reduce(f64::max),
        npu_load_percent: t.npu_load.as_ref().map(|l| l.percent.clone()).unwrap_or_default(),
        clocks: clocks(&t),
        memory: (host.mem_total_bytes > 0)
            .then_some(MemoryOverview { total_bytes: host.mem_total_bytes, available_bytes: host.mem_available_bytes }),
        active: models.iter().map(|m| m.running).sum(),
        queued: models.iter().map(|m| m.waiting).sum(),
        generated_tokens: Some(models.iter().map(|m| m.generated_tokens).sum()),
        models,
    };
    Overview {
        source: OverviewSource::Agent,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        time_ms: now_ms(),
        boards: vec![board],
        deployments: Vec::new(),
        events: Vec::new(),
    }
}
