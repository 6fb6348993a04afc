//! The semantic checks: what a provider promises about instances, whoever implements it.

use std::time::Duration;

use engine::provider::tags;

use super::{Report, Subject, Tags};

const PART: &str = "semantics";
/// How long a check waits for a provision.
const PROVISION_DEADLINE: Duration = Duration::from_secs(60);
/// How long a cancelled or killed provision gets to finish whatever it still does.
const SETTLE: Duration = Duration::from_millis(1500);

/// The tags of an instance of `project` in slot `slot`.
fn tagged(project: &str, slot: &str) -> Tags {
    [
        (tags::PROJECT, project),
        (tags::GROUP, "conformance"),
        (tags::SLOT, slot),
        (tags::HASH, "c0ffee"),
        ("team", "conformance"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn project_filter(project: &str) -> Tags {
    [(tags::PROJECT.to_owned(), project.to_owned())]
        .into_iter()
        .collect()
}

/// `Err` naming the first instance that lacks one of `want`'s tags or has another value.
fn carries(id: &str, have: &Tags, want: &Tags) -> Result<(), String> {
    for (key, value) in want {
        match have.get(key) {
            Some(v) if v == value => {}
            Some(v) => return Err(format!("instance {id} has {key}={v}, made with {value}")),
            None => return Err(format!("instance {id} lacks tag {key}={value}")),
        }
    }
    Ok(())
}

/// Every instance of `project` carries the four `tend.*` tags of its project.
async fn all_tagged(subject: &dyn Subject, project: &str) -> Result<Vec<(String, Tags)>, String> {
    let found = subject.describe(&project_filter(project)).await?;
    for (id, have) in &found {
        for key in [tags::PROJECT, tags::GROUP, tags::SLOT, tags::HASH] {
            if have.get(key).is_none_or(String::is_empty) {
                return Err(format!("instance {id} has no tag {key}"));
            }
        }
    }
    Ok(found)
}

/// The instances of `project` in slot `slot`.
fn in_slot<'a>(found: &'a [(String, Tags)], slot: &str) -> Vec<&'a String> {
    found
        .iter()
        .filter(|(_, t)| t.get(tags::SLOT).map(String::as_str) == Some(slot))
        .map(|(id, _)| id)
        .collect()
}

/// Runs every semantic check on `subject` with instances of projects named from `project`,
/// and removes every instance it made.
pub async fn semantics(subject: &dyn Subject, project: &str, report: &mut Report) {
    let other = format!("{project}-other");

    // Tags given at creation show in describe.
    let mut first = None;
    let result = async {
        let want = tagged(project, "0");
        let id = subject
            .provision(&want, "key-0", PROVISION_DEADLINE)
            .await?;
        first = Some(id.clone());
        let found = subject.describe(&project_filter(project)).await?;
        let (_, have) = found
            .iter()
            .find(|(i, _)| *i == id)
            .ok_or_else(|| format!("instance {id} was made but describe does not show it"))?;
        carries(&id, have, &want)
    }
    .await;
    report.check(PART, "tags set at creation show in describe", result);

    // The same key gives the same instance.
    let result = async {
        let want = tagged(project, "1");
        let a = subject
            .provision(&want, "key-1", PROVISION_DEADLINE)
            .await?;
        let b = subject
            .provision(&want, "key-1", PROVISION_DEADLINE)
            .await?;
        if a != b {
            return Err(format!("two provisions with one key made {a} and {b}"));
        }
        let found = subject.describe(&project_filter(project)).await?;
        match in_slot(&found, "1").len() {
            1 => Ok(()),
            n => Err(format!("{n} instances were made for one key")),
        }
    }
    .await;
    report.check(
        PART,
        "the same idempotency key gives the same instance",
        result,
    );

    report.check(
        PART,
        "destroying an unknown id succeeds",
        subject.destroy("tend-conformance-no-such-instance").await,
    );

    // A tag filter returns only what carries those tags.
    let result = async {
        let theirs = subject
            .provision(&tagged(&other, "0"), "key-other", PROVISION_DEADLINE)
            .await?;
        let ours = subject.describe(&project_filter(project)).await?;
        if let Some((id, t)) = ours
            .iter()
            .find(|(_, t)| t.get(tags::PROJECT).map(String::as_str) != Some(project))
        {
            return Err(format!(
                "describe of {} = {project} answered instance {id} with {:?}",
                tags::PROJECT,
                t.get(tags::PROJECT)
            ));
        }
        let found = subject.describe(&project_filter(&other)).await?;
        if !found.iter().any(|(id, _)| *id == theirs) {
            return Err(format!(
                "describe of project {other} misses instance {theirs}"
            ));
        }
        Ok(())
    }
    .await;
    report.check(
        PART,
        "describe answers only what carries the tags asked for",
        result,
    );

    // A provision given up at once leaves nothing it made untagged.
    let result = async {
        let want = tagged(project, "2");
        let _ = tokio::time::timeout(
            Duration::from_millis(1),
            subject.provision(&want, "key-2", PROVISION_DEADLINE),
        )
        .await;
        tokio::time::sleep(SETTLE).await;
        let found = all_tagged(subject, project).await?;
        match in_slot(&found, "2").len() {
            0 | 1 => Ok(()),
            n => Err(format!("one cancelled provision left {n} instances")),
        }
    }
    .await;
    report.check(
        PART,
        "a cancelled provision leaves nothing untagged",
        result,
    );

    // A provision past its deadline: an error or an instance, never an untagged one.
    let result = async {
        let want = tagged(project, "3");
        let _ = subject
            .provision(&want, "key-3", Duration::from_millis(1))
            .await;
        tokio::time::sleep(SETTLE).await;
        let found = all_tagged(subject, project).await?;
        match in_slot(&found, "3").len() {
            0 | 1 => Ok(()),
            n => Err(format!("one timed-out provision left {n} instances")),
        }
    }
    .await;
    report.check(
        PART,
        "a timed-out provision leaves nothing untagged",
        result,
    );

    // Killed mid-provision and started again: the instance is absent or tagged, and the
    // same key then makes (or finds) exactly one.
    let name = "killed mid-provision and started again, the instance is absent or tagged";
    let want = tagged(project, "4");
    let attempt = {
        let want = want.clone();
        async move { subject.provision(&want, "key-4", PROVISION_DEADLINE).await }
    };
    let crash = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        subject.crash_and_restart().await
    };
    let (_, crashed) = tokio::join!(
        async {
            // The attempt is dropped once the crash is done: its outcome is unknown.
            tokio::select! {
                made = attempt => Some(made),
                _ = tokio::time::sleep(Duration::from_secs(5)) => None,
            }
        },
        crash
    );
    match crashed {
        None => report.record(
            PART,
            name,
            super::Outcome::NotApplicable("nothing to kill".to_owned()),
        ),
        Some(restarted) => {
            let result = async {
                restarted?;
                tokio::time::sleep(SETTLE).await;
                let found = all_tagged(subject, project).await?;
                if in_slot(&found, "4").len() > 1 {
                    return Err("one provision left two instances".to_owned());
                }
                subject
                    .provision(&want, "key-4", PROVISION_DEADLINE)
                    .await?;
                let found = all_tagged(subject, project).await?;
                match in_slot(&found, "4").len() {
                    1 => Ok(()),
                    n => Err(format!(
                        "after the same key was provisioned again there are {n} instances"
                    )),
                }
            }
            .await;
            report.check(PART, name, result);
        }
    }

    // A clean stop and a start again: the instances are still there.
    let result = async {
        let Some(first) = first.clone() else {
            return Err("no instance was made by the first check".to_owned());
        };
        let stopped = subject.restart().await;
        let found = subject.describe(&project_filter(project)).await?;
        if !found.iter().any(|(id, _)| *id == first) {
            return Err(format!("instance {first} is gone after a restart"));
        }
        stopped
    }
    .await;
    report.check(
        PART,
        "shuts down cleanly, and its instances outlive it",
        result,
    );

    // Everything made is removed, and describe then shows nothing.
    let result = async {
        for p in [project, other.as_str()] {
            for (id, _) in subject.describe(&project_filter(p)).await? {
                subject.destroy(&id).await?;
            }
            let left = subject.describe(&project_filter(p)).await?;
            if let Some((id, _)) = left.first() {
                return Err(format!("instance {id} is still there after destroy"));
            }
        }
        Ok(())
    }
    .await;
    report.check(PART, "destroy removes an instance", result);
}
