//! Integration tests: the real `sp` binary against the real rig (Docker engine, MariaDB,
//! authenticated registry). `scripts/rig.sh up` provisions the rig; under CI a missing rig
//! fails the tests instead of skipping them.

mod harness;

mod backup;
mod bad_input;
mod day2;
mod hostile_files;
mod isolation;
mod latest;
mod local_encryption;
mod lock;
mod offsite;
mod partial;
mod proxy;
mod restore;
mod secrets;
mod site_lifecycle;
mod tenant_db;
mod voice;
