//! System figures for the metrics (CONTRACT 8): CPU, memory, free disk of the state directory and
//! temperature where the board reports one.

use std::path::PathBuf;

use serde_json::{json, Value};
use sysinfo::{Components, Disks, System};

/// Keeps sysinfo's state between snapshots (CPU usage is a difference between two reads).
pub struct SystemProbe {
    system: System,
    state_path: PathBuf,
}

impl SystemProbe {
    pub fn new(state_path: PathBuf) -> SystemProbe {
        SystemProbe {
            system: System::new(),
            state_path,
        }
    }

    pub fn snapshot(&mut self) -> Value {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let disks = Disks::new_with_refreshed_list();
        // The disk holding the state directory: the longest mount point that prefixes it.
        let path = self
            .state_path
            .canonicalize()
            .unwrap_or_else(|_| self.state_path.clone());
        let disk_free = disks
            .list()
            .iter()
            .filter(|d| path.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len())
            .map(|d| d.available_space());
        let components = Components::new_with_refreshed_list();
        let temperature = components
            .list()
            .iter()
            .filter_map(|c| c.temperature())
            .filter(|t| t.is_finite())
            .reduce(f32::max);
        json!({
            "cpu_percent": self.system.global_cpu_usage(),
            "mem_used_bytes": self.system.used_memory(),
            "disk_free_bytes": disk_free,
            "temperature_c": temperature,
        })
    }
}
