//! The one integration test binary: real `tend` processes, the real sim provider, golden
//! files under `testdata/`.

mod balancer;
mod browser;
mod cli;
mod dashboard;
mod docker;
mod errors;
mod etcd;
mod etcd_store;
mod examples;
mod formats;
mod fuzz_replay;
mod harness;
mod instance_processes;
mod nickel;
mod packaging;
mod planner_props;
mod plans;
mod plugins;
mod process;
mod reconciler;
mod replicated;
mod run;
mod sim_lease;
mod simulation;
mod tend_test;
mod terraform;
mod vagrant;
