//! [`RevisionSpec`]: what a service runs (its command or image, arguments,
//! environment), as opposed to how it scales ([`crate::ServiceSettings`]).
//! A deploy that changes one of these makes a new revision; one that changes only
//! settings does not. Each field is optional (unset: keep what runs, in an update;
//! nothing, in a new service). The rules a value must keep are here; which runtime
//! reads which field is the runtime's.

use serde::{Deserialize, Serialize};

use crate::InvalidSetting;

/// One variable of the function's environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

impl EnvVar {
    /// A variable with a plain value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        EnvVar {
            name: name.into(),
            value: value.into(),
        }
    }

    /// `NAME=VALUE`, as `strata deploy --env` takes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok(EnvVar::new(name, value)),
            _ => Err(format!("{text:?} is not NAME=VALUE")),
        }
    }
}

/// What one revision of a service runs. Two specs that are equal run the same thing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct RevisionSpec {
    /// The command that starts one instance of the function on the local runtime; it
    /// gets HOST and PORT.
    pub command: Option<String>,
    /// The function's container image (Kubernetes).
    pub image: Option<String>,
    /// Arguments after the command (local runtime).
    pub args: Option<Vec<String>>,
    /// The function's environment, besides HOST and PORT (local runtime). Names
    /// starting with `STRATA_` are Strata's own and refused.
    pub env: Option<Vec<EnvVar>>,
    /// Kubernetes: a digest of everything else the `StatefulService` says about the
    /// function's pod (command, arguments, environment, resources, port, account,
    /// pull secrets). The operator sets it, so that a change of any of it is a
    /// revision of its own (a Deployment of its own), as an image change is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

impl RevisionSpec {
    /// Every field's name, as the REST API spells it, in declaration order.
    pub const FIELDS: &'static [&'static str] = &["command", "image", "args", "env", "template"];

    /// A spec that runs `command` on the local runtime.
    pub fn command(command: impl Into<String>) -> Self {
        RevisionSpec {
            command: Some(command.into()),
            ..RevisionSpec::default()
        }
    }

    /// A spec that runs `image` on Kubernetes.
    pub fn image(image: impl Into<String>) -> Self {
        RevisionSpec {
            image: Some(image.into()),
            ..RevisionSpec::default()
        }
    }

    /// This spec laid over `base`: each field given here wins.
    pub fn over(self, base: &RevisionSpec) -> Self {
        let RevisionSpec {
            command,
            image,
            args,
            env,
            template,
        } = self;
        RevisionSpec {
            command: command.or_else(|| base.command.clone()),
            image: image.or_else(|| base.image.clone()),
            args: args.or_else(|| base.args.clone()),
            env: env.or_else(|| base.env.clone()),
            template: template.or_else(|| base.template.clone()),
        }
    }

    /// The same spec spelled one way: an empty list or blank text is
    /// the field unset, so that two specs that run the same thing compare equal.
    pub fn normalized(self) -> Self {
        let text = |value: Option<String>| value.filter(|text| !text.trim().is_empty());
        let list = |value: Option<Vec<String>>| value.filter(|list| !list.is_empty());
        RevisionSpec {
            command: text(self.command),
            image: text(self.image),
            args: list(self.args),
            env: self.env.filter(|env| !env.is_empty()),
            template: text(self.template),
        }
    }

    /// Whether it runs anything: a command or an image.
    pub fn runs_something(&self) -> bool {
        let given = |value: &Option<String>| value.as_deref().is_some_and(|text| !text.trim().is_empty());
        given(&self.command) || given(&self.image)
    }

    /// The value of the plain variable `name`, if the environment has one.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .flatten()
            .find(|var| var.name == name)
            .map(|var| var.value.as_str())
    }

    /// Checks the fields that are given; the first broken rule is the answer.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        for var in self.env.iter().flatten() {
            let valid_name = !var.name.is_empty()
                && !var.name.starts_with(|c: char| c.is_ascii_digit())
                && var
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid_name {
                return Err(InvalidSetting::new(
                    "env",
                    format!(
                        "env: {:?} is not a variable name (letters, digits, '_', '-' and '.', not starting with a digit)",
                        var.name
                    ),
                ));
            }
            if var.name.starts_with("STRATA_") {
                return Err(InvalidSetting::new(
                    "env",
                    format!(
                        "env: {} is reserved: variables starting with STRATA_ are Strata's own",
                        var.name
                    ),
                ));
            }
        }
        let mut names: Vec<&str> = self.env.iter().flatten().map(|var| var.name.as_str()).collect();
        names.sort_unstable();
        if let Some(twice) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(InvalidSetting::new("env", format!("env: {} is given twice", twice[0])));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_keeps_what_it_does_not_name() {
        let base = RevisionSpec {
            env: Some(vec![EnvVar::new("LABEL", "one")]),
            ..RevisionSpec::command("./cart")
        };
        let changed = RevisionSpec {
            env: Some(vec![EnvVar::new("LABEL", "two")]),
            ..RevisionSpec::default()
        }
        .over(&base);
        assert_eq!(changed.command.as_deref(), Some("./cart"));
        assert_eq!(changed.env_value("LABEL"), Some("two"));
        assert_eq!(RevisionSpec::default().over(&base), base);
    }

    #[test]
    fn empty_fields_are_unset_so_equal_specs_compare_equal() {
        let spelled = RevisionSpec {
            args: Some(vec![]),
            env: Some(vec![]),
            image: Some(" ".into()),
            ..RevisionSpec::command("./cart")
        };
        assert_eq!(spelled.normalized(), RevisionSpec::command("./cart"));
        assert!(RevisionSpec::command("./cart").runs_something());
        assert!(!RevisionSpec::default().runs_something());
    }

    #[test]
    fn bad_environments_are_refused_with_their_field() {
        let with = |vars: Vec<EnvVar>| RevisionSpec {
            env: Some(vars),
            ..RevisionSpec::command("./cart")
        };
        let cases = [
            (
                with(vec![EnvVar::new("1X", "a")]),
                "env: \"1X\" is not a variable name (letters, digits, '_', '-' and '.', not starting with a digit)",
            ),
            (
                with(vec![EnvVar::new("STRATA_TOKEN", "a")]),
                "env: STRATA_TOKEN is reserved: variables starting with STRATA_ are Strata's own",
            ),
            (
                with(vec![EnvVar::new("A", "1"), EnvVar::new("A", "2")]),
                "env: A is given twice",
            ),
        ];
        for (spec, message) in cases {
            let error = spec.validate().unwrap_err();
            assert_eq!((error.field, error.message.as_str()), ("env", message));
        }
        assert_eq!(with(vec![EnvVar::new("LABEL", "x")]).validate(), Ok(()));
        assert_eq!(EnvVar::parse("A=b=c"), Ok(EnvVar::new("A", "b=c")));
        assert!(EnvVar::parse("=b").is_err());
    }
}
