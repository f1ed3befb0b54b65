//! `pixbatch simulator`: the stand-in API on 127.0.0.1 until a signal.

use std::sync::atomic::Ordering::SeqCst;

use tokio_util::sync::CancellationToken;

use crate::cli::SimulatorArgs;
use crate::config::sim_config;
use crate::error::{EXIT_OK, Error};
use crate::report::print;
use crate::simulator;

pub async fn simulator(args: SimulatorArgs, stop: CancellationToken) -> Result<i32, Error> {
    let mut config = sim_config(&args.sim);
    config.api_key = args.accept_key;
    config.balance = args.balance;
    let handle = simulator::start(config, args.port).await.map_err(|error| {
        Error::Other(format!(
            "failed to listen on 127.0.0.1:{}: {error}",
            args.port
        ))
    })?;
    print(&format!(
        "simulator listening on {url}\n\
         try: HIGHWAY_BASE_URL={url} HIGHWAY_API_KEY=anything pixbatch run jobs/example.csv\n",
        url = handle.base_url()
    ))?;
    stop.cancelled().await;
    let counters = handle.counters();
    print(&format!(
        "simulator stopped: {} submissions received, {} accepted, {} rate-limited, {} result requests, {} downloads\n",
        counters.submits_received.load(SeqCst),
        counters.submits_accepted.load(SeqCst),
        counters.rate_limited.load(SeqCst),
        counters.results_received.load(SeqCst),
        counters.downloads_completed.load(SeqCst),
    ))?;
    Ok(EXIT_OK)
}
