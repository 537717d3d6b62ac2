package fsm

import (
	"context"
	"errors"
	"sync"

	"github.com/hypernode-sol/worker/chain"
)

// Gate says whether the worker may claim jobs now; when not, reason says why
// ("GPU 1 (NVIDIA RTX A5000) is gone"). hardware.Monitor.Gate is one. It must
// not block.
type Gate func() (ok bool, reason string)

// Unlister is the optional part of a Market that leaves the node queue
// (chain.Client has it). While the gate is closed the loop leaves the queue,
// so that create_job does not assign this node new work.
type Unlister interface {
	UnlistNode(ctx context.Context) error
}

type gateState struct {
	mu     sync.Mutex
	reason string // the reason last logged; "" = open
}

// gateOpen asks Gate; on closing it logs the reason once and leaves the node
// queue, on opening it logs the resumption.
func (l *Loop) gateOpen(ctx context.Context) bool {
	if l.Gate == nil {
		return true
	}
	ok, reason := l.Gate()
	l.gate.mu.Lock()
	prev := l.gate.reason
	if ok {
		l.gate.reason = ""
	} else {
		if reason == "" {
			reason = "unhealthy"
		}
		l.gate.reason = reason
	}
	l.gate.mu.Unlock()
	log := l.Driver.Log
	switch {
	case ok && prev != "":
		log.Info().Msg("claiming resumed")
	case !ok && prev != "" && prev != reason:
		log.Debug().Str("reason", reason).Msg("claiming still paused")
	case !ok && prev == "":
		log.Warn().Str("reason", reason).Msg("claiming paused")
		if u, isU := l.Market.(Unlister); isU {
			err := u.UnlistNode(ctx)
			switch {
			case err == nil:
				log.Info().Msg("left the market's node queue while paused")
			case ctx.Err() != nil, errors.Is(err, chain.ErrNodeNotQueued):
			default:
				log.Warn().Err(err).Msg("leave the node queue (unlist_node)")
			}
		}
	}
	return ok
}
