//! `kes policy` and `kes ls`.

use crate::conn;
use crate::key::Common;
use crate::output::{self, outln, print_json};
use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Describe a policy
    Info(PolicyName),
    /// Show a policy's allow and deny rules
    Show(PolicyName),
    /// List policies
    Ls(PolicyPattern),
    /// Create or replace a policy on every node (admin)
    Create(PolicyWriteArgs),
    /// Assign an identity to a policy (admin)
    Assign(PolicyAssignArgs),
    /// Delete a policy and its assignments (admin)
    Rm(PolicyName),
}

#[derive(Args, Debug)]
pub struct PolicyWriteArgs {
    /// Policy name
    #[arg(value_name = "NAME")]
    pub name: String,
    /// A path pattern to allow, e.g. '/v1/key/generate/my-app*' (repeatable)
    #[arg(long = "allow", value_name = "PATTERN")]
    pub allow: Vec<String>,
    /// A path pattern to deny; deny wins over allow (repeatable)
    #[arg(long = "deny", value_name = "PATTERN")]
    pub deny: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct PolicyAssignArgs {
    /// Policy name
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The identity to assign (see `kes identity of`)
    #[arg(value_name = "IDENTITY")]
    pub identity: String,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct PolicyName {
    /// Policy name
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct PolicyPattern {
    /// Only policies starting with this prefix (a trailing '*' is allowed)
    #[arg(value_name = "PATTERN", default_value = "*")]
    pub pattern: String,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only names starting with this prefix (a trailing '*' is allowed)
    #[arg(value_name = "PREFIX", default_value = "*")]
    pub prefix: String,
    /// List identities instead of keys
    #[arg(short = 'i', long = "identity", conflicts_with = "policy")]
    pub identity: bool,
    /// List policies instead of keys
    #[arg(short = 'p', long = "policy")]
    pub policy: bool,
    #[command(flatten)]
    pub common: Common,
}

pub async fn run(cmd: PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Info(a) => {
            let c = conn::client(a.common.server.server.clone(), &a.common.conn)?;
            let info = c
                .describe_policy(&a.name)
                .await
                .with_context(|| format!("failed to describe policy '{}'", a.name))?;
            if a.common.out.json {
                return print_json(&info);
            }
            outln!("{:<11} {}", "Name", info.name)?;
            outln!("{:<11} {}", "Date", output::date(&info.created_at))?;
            outln!("{:<11} {}", "Created By", info.created_by)
        }
        PolicyCmd::Show(a) => {
            let c = conn::client(a.common.server.server.clone(), &a.common.conn)?;
            let policy = c
                .read_policy(&a.name)
                .await
                .with_context(|| format!("failed to show policy '{}'", a.name))?;
            if a.common.out.json {
                return print_json(&policy);
            }
            outln!("{:<11} {}", "Name", policy.name)?;
            outln!("{:<11} {}", "Date", output::date(&policy.created_at))?;
            if !policy.created_by.is_empty() {
                outln!("{:<11} {}", "Created By", policy.created_by)?;
            }
            if !policy.allow.is_empty() {
                outln!("{:<11}", "Allow")?;
                for pattern in policy.allow.keys() {
                    outln!("{:<11} · {pattern}", "")?;
                }
            }
            if !policy.deny.is_empty() {
                outln!("{:<11}", "Deny")?;
                for pattern in policy.deny.keys() {
                    outln!("{:<11} · {pattern}", "")?;
                }
            }
            Ok(())
        }
        PolicyCmd::Create(a) => {
            let c = conn::client(a.common.server.server.clone(), &a.common.conn)?;
            c.write_policy(&a.name, &a.allow, &a.deny)
                .await
                .with_context(|| format!("failed to write policy '{}'", a.name))
        }
        PolicyCmd::Assign(a) => {
            let c = conn::client(a.common.server.server.clone(), &a.common.conn)?;
            c.assign_policy(&a.name, &a.identity)
                .await
                .with_context(|| {
                    format!("failed to assign '{}' to policy '{}'", a.identity, a.name)
                })
        }
        PolicyCmd::Rm(a) => {
            let c = conn::client(a.common.server.server.clone(), &a.common.conn)?;
            c.delete_policy(&a.name)
                .await
                .with_context(|| format!("failed to delete policy '{}'", a.name))
        }
        PolicyCmd::Ls(a) => {
            let c = conn::client(a.common.server.server.clone(), &a.common.conn)?;
            let mut names = c
                .list_policies(&a.pattern)
                .await
                .context("failed to list policies")?
                .names;
            names.sort();
            output::print_names("Policy", &names, a.common.out.json)
        }
    }
}

pub async fn ls(a: LsArgs) -> anyhow::Result<()> {
    let c = conn::client(a.common.server.server.clone(), &a.common.conn)?;
    let json = a.common.out.json;
    if a.identity {
        let mut ids = c
            .list_identities(&a.prefix)
            .await
            .context("failed to list identities")?
            .identities;
        ids.sort();
        return output::print_names("Identity", &ids, json);
    }
    if a.policy {
        let mut names = c
            .list_policies(&a.prefix)
            .await
            .context("failed to list policies")?
            .names;
        names.sort();
        return output::print_names("Policy", &names, json);
    }
    let mut names = c
        .list_keys_all(kes_types::list_prefix(&a.prefix))
        .await
        .context("failed to list keys")?;
    names.sort();
    output::print_names("Key", &names, json)
}
