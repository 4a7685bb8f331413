//! Two entities that talk through the proxy: an event-sourced `Account` whose
//! transfers deposit into another account with a synchronous side effect and
//! record statement entries with asynchronous ones, and a `Statement` value
//! entity that answers balance questions by forwarding to the account.

use strata_sdk::{
    unpack_if, Any, Command, EntityError, EventContext, EventSourcedEntity, EventSourcedService, Failure, Reply,
    Service, ServiceCall, SideEffect, ValueContext, ValueEntity, ValueEntityService,
};

/// Messages generated from `proto/transfers.proto`.
#[allow(clippy::all, missing_docs)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/com.example.transfers.rs"));
}

/// The `FileDescriptorSet` of `proto/`, imports included, as discovery sends it.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

pub const ACCOUNTS: &str = "com.example.transfers.Accounts";
pub const STATEMENTS: &str = "com.example.transfers.Statements";

/// How many entries a statement keeps.
pub const STATEMENT_LENGTH: usize = 20;

/// One account: its balance is the sum of its deposits less its withdrawals.
#[derive(Debug, Default)]
pub struct Account {
    balance: i64,
}

impl Account {
    pub fn balance(&self) -> i64 {
        self.balance
    }

    fn deposit(&self, deposit: api::Deposit, ctx: &mut EventContext) -> Result<Reply, Failure> {
        if deposit.amount <= 0 {
            return Err(Failure::new("a deposit must be positive"));
        }
        ctx.emit(api::Deposited { amount: deposit.amount });
        Ok(Reply::message(&api::Balance {
            amount: self.balance + deposit.amount,
        }))
    }

    fn transfer(&self, transfer: api::Transfer, ctx: &mut EventContext) -> Result<Reply, Failure> {
        if transfer.amount <= 0 {
            return Err(Failure::new("a transfer must be positive"));
        }
        if transfer.to.is_empty() || transfer.to == transfer.account_id {
            return Err(Failure::new("a transfer needs another account to go to"));
        }
        if transfer.amount > self.balance {
            return Err(Failure::new(format!(
                "the balance of {} is {}, less than {}",
                transfer.account_id, self.balance, transfer.amount
            )));
        }
        ctx.emit(api::Withdrawn {
            amount: transfer.amount,
        });
        let deposit = api::Deposit {
            account_id: transfer.to.clone(),
            amount: transfer.amount,
        };
        let entry = |account_id: &str, description: String, amount: i64| {
            SideEffect::asynchronous(ServiceCall::new(
                STATEMENTS,
                "Record",
                &api::Entry {
                    account_id: account_id.to_owned(),
                    description,
                    amount,
                },
            ))
        };
        Ok(Reply::message(&api::Balance {
            amount: self.balance - transfer.amount,
        })
        .with_effect(SideEffect::synchronous(ServiceCall::new(ACCOUNTS, "Deposit", &deposit)))
        .with_effect(entry(
            &transfer.account_id,
            format!("to {}", transfer.to),
            -transfer.amount,
        ))
        .with_effect(entry(
            &transfer.to,
            format!("from {}", transfer.account_id),
            transfer.amount,
        )))
    }
}

impl EventSourcedEntity for Account {
    type Snapshot = api::Balance;

    fn handle_command(&self, command: &Command, ctx: &mut EventContext) -> Result<Reply, Failure> {
        match command.name() {
            "Deposit" => self.deposit(command.decode()?, ctx),
            "Transfer" => self.transfer(command.decode()?, ctx),
            "GetBalance" => Ok(Reply::message(&api::Balance { amount: self.balance })),
            other => Err(Failure::new(format!("unknown command {other}"))),
        }
    }

    fn apply_event(&mut self, event: &Any) -> Result<(), EntityError> {
        if let Some(deposited) = unpack_if::<api::Deposited>(event)? {
            self.balance += deposited.amount;
        } else if let Some(withdrawn) = unpack_if::<api::Withdrawn>(event)? {
            self.balance -= withdrawn.amount;
        } else {
            return Err(EntityError::unknown_event(event));
        }
        Ok(())
    }

    fn snapshot(&self) -> Option<api::Balance> {
        Some(api::Balance { amount: self.balance })
    }

    fn restore(&mut self, snapshot: api::Balance) -> Result<(), EntityError> {
        self.balance = snapshot.amount;
        Ok(())
    }
}

/// The last entries of one account.
pub struct StatementEntity;

impl ValueEntity for StatementEntity {
    type State = api::Statement;

    fn handle_command(&self, command: &Command, ctx: &mut ValueContext<'_, api::Statement>) -> Result<Reply, Failure> {
        match command.name() {
            "Record" => {
                let entry: api::Entry = command.decode()?;
                let mut statement = ctx.state().cloned().unwrap_or_default();
                statement.entries.push(entry);
                let excess = statement.entries.len().saturating_sub(STATEMENT_LENGTH);
                statement.entries.drain(..excess);
                ctx.update_state(statement);
                Ok(Reply::empty())
            }
            "Get" => Ok(Reply::message(&ctx.state().cloned().unwrap_or_default())),
            "Balance" => {
                let question: api::GetBalance = command.decode()?;
                Ok(Reply::forward(ServiceCall::new(ACCOUNTS, "GetBalance", &question)))
            }
            other => Err(Failure::new(format!("unknown command {other}"))),
        }
    }
}

/// The user function: both entities.
pub fn service() -> Service {
    Service::new(DESCRIPTORS)
        .service_name("transfers")
        .service_version(env!("CARGO_PKG_VERSION"))
        .event_sourced(EventSourcedService::new(ACCOUNTS, "accounts", |_| Account::default()).snapshot_every(50))
        .value_entity(ValueEntityService::new(STATEMENTS, "statements", |_| StatementEntity))
}

#[cfg(test)]
mod tests {
    use strata_sdk::testkit::EventSourcedTestKit;

    use super::*;

    #[test]
    fn a_transfer_withdraws_deposits_there_and_records_both_sides() {
        let mut alice = EventSourcedTestKit::new("alice", Account::default());
        alice
            .handle(
                "Deposit",
                &api::Deposit {
                    account_id: "alice".into(),
                    amount: 100,
                },
            )
            .unwrap();
        let effects = alice
            .handle(
                "Transfer",
                &api::Transfer {
                    account_id: "alice".into(),
                    to: "bob".into(),
                    amount: 30,
                },
            )
            .unwrap();
        assert_eq!(effects.reply::<api::Balance>().amount, 70);
        assert_eq!(effects.event::<api::Withdrawn>(0).amount, 30);
        assert_eq!(alice.entity().balance(), 70);
        let calls: Vec<_> = effects
            .side_effects()
            .iter()
            .map(|e| (e.call().service(), e.call().method(), e.is_synchronous()))
            .collect();
        assert_eq!(
            calls,
            [
                (ACCOUNTS, "Deposit", true),
                (STATEMENTS, "Record", false),
                (STATEMENTS, "Record", false)
            ]
        );
    }

    #[test]
    fn an_overdraft_fails_and_asks_for_nothing() {
        let mut alice = EventSourcedTestKit::new("alice", Account::default());
        let failure = alice
            .handle(
                "Transfer",
                &api::Transfer {
                    account_id: "alice".into(),
                    to: "bob".into(),
                    amount: 1,
                },
            )
            .unwrap_err();
        assert_eq!(failure.description(), "the balance of alice is 0, less than 1");
        assert!(failure.effects().is_empty());
    }
}
