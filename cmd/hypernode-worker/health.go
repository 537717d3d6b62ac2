package main

import (
	"time"

	"github.com/hypernode-sol/worker/fsm"
	"github.com/hypernode-sol/worker/hardware"
)

// newMonitor builds the health monitor of a started worker: it samples this
// machine (and the GPU vendors found at startup, or the GPU_INVENTORY file)
// every HEALTH_CHECK_INTERVAL, and closes the loop's claim gate while a GPU
// is gone or free disk is under DISK_FLOOR_MB.
func (w *worker) newMonitor(loop *fsm.Loop, started time.Time) *hardware.Monitor {
	s := &hardware.HostSampler{DiskPath: w.cfg.DataDir, Vendors: hardware.VendorsOf(w.specs.GPUs), InventoryFile: w.cfg.GPUInventory}
	return &hardware.Monitor{Sample: s.Sample, Inventory: w.specs.GPUs, DiskFloorBytes: w.cfg.DiskFloorBytes,
		Active: loop.Active, Started: started, Log: w.log}
}
