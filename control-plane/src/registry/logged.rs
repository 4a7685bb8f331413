//! How the log's service commands read, whichever version wrote them. Before the
//! settings were one type (`strata-settings`), a `ServiceSpec` or `ServicePatch` held
//! its two durations as milliseconds (`scale_to_zero_grace_ms`, `stable_window_ms`);
//! every other setting kept its name and type. Before revisions, what runs was only
//! `command` and `image`, which kept their names in [`RevisionSpec`]. An entry written
//! then still applies as it did; entries are written in today's shape only.

use serde::Deserialize;
use strata_settings::{HumanDuration, RevisionSpec, ServiceSettings};

use super::command::{ServicePatch, ServiceSpec};
use super::CanarySpec;

/// The durations an older entry spelled in milliseconds.
#[derive(Debug, Default, Deserialize)]
struct Milliseconds {
    #[serde(default)]
    scale_to_zero_grace_ms: Option<u64>,
    #[serde(default)]
    stable_window_ms: Option<u64>,
}

impl Milliseconds {
    fn into(self, settings: ServiceSettings) -> ServiceSettings {
        ServiceSettings {
            scale_to_zero_grace: settings
                .scale_to_zero_grace
                .or(self.scale_to_zero_grace_ms.map(HumanDuration::from_millis)),
            stable_window: settings
                .stable_window
                .or(self.stable_window_ms.map(HumanDuration::from_millis)),
            ..settings
        }
    }
}

#[derive(Deserialize)]
pub(super) struct LoggedSpec {
    name: String,
    #[serde(flatten)]
    runs: RevisionSpec,
    #[serde(flatten)]
    settings: ServiceSettings,
    #[serde(flatten)]
    milliseconds: Milliseconds,
}

impl From<LoggedSpec> for ServiceSpec {
    fn from(logged: LoggedSpec) -> Self {
        ServiceSpec {
            name: logged.name,
            runs: logged.runs,
            settings: logged.milliseconds.into(logged.settings),
        }
    }
}

#[derive(Deserialize)]
pub(super) struct LoggedPatch {
    #[serde(flatten)]
    runs: RevisionSpec,
    #[serde(flatten)]
    settings: ServiceSettings,
    #[serde(flatten)]
    milliseconds: Milliseconds,
    #[serde(default)]
    replace_settings: bool,
    #[serde(default)]
    canary: Option<CanarySpec>,
}

impl From<LoggedPatch> for ServicePatch {
    fn from(logged: LoggedPatch) -> Self {
        ServicePatch {
            runs: logged.runs,
            settings: logged.milliseconds.into(logged.settings),
            replace_settings: logged.replace_settings,
            canary: logged.canary,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use strata_settings::KeepAlive;

    use super::*;
    use crate::registry::Command;

    #[test]
    fn an_entry_from_before_the_settings_type_applies_as_it_did() {
        let create = json!({"type": "create_service", "name": "cart", "command": "./cart", "image": null,
            "min_scale": 1, "max_scale": 4, "target_concurrency": 20, "scale_to_zero_grace_ms": 45000,
            "stable_window_ms": null, "shard_count": 8, "keep_alive": "fixed", "prewarm_percentile": null,
            "keep_alive_percentile": null});
        let Command::CreateService(spec) = serde_json::from_value(create).unwrap() else {
            panic!("not a create");
        };
        assert_eq!(
            spec.settings,
            ServiceSettings {
                min_scale: Some(1),
                max_scale: Some(4),
                target_concurrency: Some(20),
                scale_to_zero_grace: Some(HumanDuration::from_secs(45)),
                shard_count: Some(8),
                keep_alive: Some(KeepAlive::Fixed),
                ..ServiceSettings::default()
            }
        );
        let update = json!({"type": "update_service", "name": "cart", "patch": {"command": null,
            "image": null, "min_scale": null, "max_scale": null, "target_concurrency": null,
            "scale_to_zero_grace_ms": null, "stable_window_ms": 90000}});
        let Command::UpdateService { patch, .. } = serde_json::from_value(update).unwrap() else {
            panic!("not an update");
        };
        assert_eq!(patch.settings.stable_window, Some(HumanDuration::from_secs(90)));
        assert!(!patch.replace_settings);
    }

    #[test]
    fn todays_entries_read_back_as_written() {
        let spec = ServiceSpec {
            name: "cart".into(),
            runs: RevisionSpec {
                env: Some(vec![strata_settings::EnvVar::new("LABEL", "two")]),
                ..RevisionSpec::command("./cart")
            },
            settings: ServiceSettings::sample(),
        };
        let written = serde_json::to_string(&Command::CreateService(spec.clone())).unwrap();
        assert_eq!(
            serde_json::from_str::<Command>(&written).unwrap(),
            Command::CreateService(spec)
        );
        let patch = ServicePatch {
            settings: ServiceSettings::sample(),
            replace_settings: true,
            ..ServicePatch::default()
        };
        let written = serde_json::to_string(&patch).unwrap();
        assert_eq!(serde_json::from_str::<ServicePatch>(&written).unwrap(), patch);
    }
}
