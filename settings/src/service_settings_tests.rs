//! The settings' names, defaults and rules.

use super::*;

#[test]
fn fields_names_every_setting_in_order() {
    let written = serde_json::to_value(ServiceSettings::sample()).unwrap();
    let names: Vec<&str> = written.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(names, ServiceSettings::FIELDS);
    let sample = ServiceSettings::sample();
    assert_eq!(sample.clone().with_defaults(), sample, "the sample gives every setting");
    assert!(sample.validate().is_ok());
}

#[test]
fn unset_settings_travel_as_null_and_come_back_unset() {
    let written = serde_json::to_value(ServiceSettings::default()).unwrap();
    assert!(
        written.as_object().unwrap().values().all(serde_json::Value::is_null),
        "{written}"
    );
    assert_eq!(
        serde_json::from_str::<ServiceSettings>("{}").unwrap(),
        ServiceSettings::default()
    );
}

#[test]
fn defaults_fill_what_is_fixed_and_leave_the_platforms() {
    let filled = ServiceSettings::default().with_defaults();
    assert_eq!(
        filled,
        ServiceSettings {
            min_scale: Some(0),
            max_scale: Some(10),
            target_concurrency: Some(70),
            scale_to_zero_grace: Some(HumanDuration::from_secs(30)),
            stable_window: None,
            shard_count: Some(64),
            keep_alive: None,
            prewarm_percentile: Some(5),
            keep_alive_percentile: Some(99),
            hold_timeout: None,
        }
    );
    let above = ServiceSettings {
        min_scale: Some(12),
        ..ServiceSettings::default()
    };
    assert_eq!(
        above.with_defaults().max_scale,
        Some(12),
        "the default maximum rises to the minimum"
    );
}

#[test]
fn given_settings_win_over_the_base() {
    let base = ServiceSettings::sample();
    let change = ServiceSettings {
        max_scale: Some(3),
        hold_timeout: Some(HumanDuration::from_secs(1)),
        ..ServiceSettings::default()
    };
    let laid = change.over(&base);
    assert_eq!(laid.max_scale, Some(3));
    assert_eq!(laid.hold_timeout, Some(HumanDuration::from_secs(1)));
    assert_eq!(laid.min_scale, base.min_scale);
    assert_eq!(ServiceSettings::default().over(&base), base);
}

#[test]
fn each_rule_names_its_setting() {
    let refused = |settings: ServiceSettings| settings.validate().unwrap_err();
    let cases = [
        (
            ServiceSettings {
                max_scale: Some(0),
                ..Default::default()
            },
            "max_scale",
            "max_scale must be at least 1",
        ),
        (
            ServiceSettings {
                min_scale: Some(5),
                max_scale: Some(2),
                ..Default::default()
            },
            "min_scale",
            "min_scale (5) must not exceed max_scale (2)",
        ),
        (
            ServiceSettings {
                target_concurrency: Some(0),
                ..Default::default()
            },
            "target_concurrency",
            "target_concurrency must be at least 1",
        ),
        (
            ServiceSettings {
                stable_window: Some(HumanDuration::from_millis(500)),
                ..Default::default()
            },
            "stable_window",
            "stable_window must be between 1s and 1h (got 500ms)",
        ),
        (
            ServiceSettings {
                shard_count: Some(0),
                ..Default::default()
            },
            "shard_count",
            "shard_count must be between 1 and 4096 (got 0)",
        ),
        (
            ServiceSettings {
                prewarm_percentile: Some(51),
                ..Default::default()
            },
            "prewarm_percentile",
            "prewarm_percentile must be between 0 and 50 (got 51)",
        ),
        (
            ServiceSettings {
                keep_alive_percentile: Some(101),
                ..Default::default()
            },
            "keep_alive_percentile",
            "keep_alive_percentile must be between 50 and 100 (got 101)",
        ),
        (
            ServiceSettings {
                hold_timeout: Some(HumanDuration::from_millis(0)),
                ..Default::default()
            },
            "hold_timeout",
            "hold_timeout must be more than 0 and at most 1h (got 0s)",
        ),
        (
            ServiceSettings {
                hold_timeout: Some(HumanDuration::from_secs(3_601)),
                ..Default::default()
            },
            "hold_timeout",
            "hold_timeout must be more than 0 and at most 1h (got 3601s)",
        ),
    ];
    for (settings, field, message) in cases {
        let error = refused(settings);
        assert_eq!((error.field, error.message.as_str()), (field, message));
    }
    let edges = ServiceSettings {
        min_scale: Some(0),
        max_scale: Some(1),
        target_concurrency: Some(1),
        stable_window: Some(HumanDuration::from_secs(3_600)),
        shard_count: Some(4096),
        prewarm_percentile: Some(0),
        keep_alive_percentile: Some(50),
        hold_timeout: Some(HumanDuration::from_millis(1)),
        ..Default::default()
    };
    assert_eq!(edges.validate(), Ok(()));
}
