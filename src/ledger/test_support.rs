//! Helpers shared by the ledger's unit tests: a job spec, a whole ingest,
//! a job id.

use super::Ledger;
use super::records::IngestOutcome;
use crate::job::{JobId, JobSpec, VideoRequest};

pub fn spec(id: &str, prompt: &str, line: u64) -> JobSpec {
    JobSpec {
        job_id: JobId(id.to_owned()),
        explicit_id: true,
        line,
        request: VideoRequest {
            prompt: prompt.into(),
            ..crate::job::tests::request()
        },
        input: serde_json::Map::new(),
    }
}

pub fn ingest(ledger: &mut Ledger, specs: &[JobSpec]) -> Vec<IngestOutcome> {
    let mut ingest = ledger.begin_ingest().unwrap();
    let outcomes = specs
        .iter()
        .map(|spec| ingest.add(spec, Some(5 * 45_000)).unwrap())
        .collect();
    ingest.finish(&["id".to_owned()]).unwrap();
    outcomes
}

pub fn id(text: &str) -> JobId {
    JobId(text.to_owned())
}
