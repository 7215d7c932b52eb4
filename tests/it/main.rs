//! Integration tests: the real `sp` binary against the real rig (Docker engine, MariaDB,
//! authenticated registry). `scripts/rig.sh up` provisions the rig; under CI a missing rig
//! fails the tests instead of skipping them.

mod harness;

mod backup;
mod bad_input;
mod hostile_files;
mod lock;
mod restore;
mod site_lifecycle;
