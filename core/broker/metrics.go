package broker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the broker's Prometheus series. With no Registerer they are
// still counted (cheaply) but exported nowhere.
type metrics struct {
	reg           prometheus.Registerer
	collectors    []prometheus.Collector
	producedTotal prometheus.Counter
	consumedTotal prometheus.Counter
	commitDelay   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, b *Broker) *metrics {
	m := &metrics{
		reg: reg,
		producedTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "conflux_produced_messages_total", Help: "Messages produced through this node and committed."}),
		consumedTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "conflux_consumed_messages_total", Help: "Messages read from queues on this node."}),
		commitDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "conflux_produce_commit_seconds", Help: "Time from proposing a batch to its apply on this node.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, labels prometheus.Labels, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(f()) })
	}
	m.collectors = []prometheus.Collector{m.producedTotal, m.consumedTotal, m.commitDelay,
		gauge("conflux_raft_is_leader", "1 on the Raft leader, else 0.", func() float64 {
			if b.node.Status().Role == "StateLeader" {
				return 1
			}
			return 0
		}),
		gauge("conflux_raft_term", "Current Raft term.", func() float64 { return float64(b.node.Status().Term) }),
		gauge("conflux_raft_leader_id", "Raft id of the known leader, 0 if none.", func() float64 { return float64(b.node.Status().Leader) }),
		gauge("conflux_raft_applied_index", "Last applied Raft index.", func() float64 { return float64(b.node.Status().Applied) }),
		gauge("conflux_raft_commit_index", "Last committed Raft index.", func() float64 { return float64(b.node.Status().Commit) }),
		gauge("conflux_log_disk_bytes", "Bytes of commit-log segments on disk.", func() float64 {
			return float64(b.node.Log().DiskBytes())
		}),
		gauge("conflux_disk_free_bytes", "Free bytes in the data dir's file system at the last check.", func() float64 {
			return float64(b.disk.free.Load())
		}),
		gauge("conflux_disk_free_limit_bytes", "Free-space limit under which the disk alarm is on (-1: off).", func() float64 {
			return float64(b.cfg.Disk.FreeLimitBytes)
		}),
		gauge("conflux_disk_alarm", "1 while this node's free space is below its limit.", func() float64 {
			return boolGauge(b.disk.local.Load())
		}),
		gauge("conflux_disk_alarm_nodes", "Voters whose disk alarm is on, in the replicated records.", func() float64 {
			return float64(len(b.alarmedNodes()))
		}),
		gauge("conflux_produce_blocked", "1 while producers are refused here (local disk alarm, or a quorum's).", func() float64 {
			return boolGauge(b.disk.blocked.Load())
		}),
		gauge("conflux_raft_storage_full", "1 while the raft loop waits for disk space (ENOSPC).", func() float64 {
			return boolGauge(b.node.Status().StorageFull)
		}),
		gauge("conflux_log_first_index", "First Raft index still in the commit log (retention moves it).", func() float64 {
			i, _ := b.node.Log().FirstIndex()
			return float64(i)
		}),
		counter("conflux_retention_passes_total", "Retention passes that removed segments.", nil, b.sm.retention.passes.Load),
		counter("conflux_retention_removed_bytes_total", "Commit-log bytes removed by retention.", nil, b.sm.retention.removedBytes.Load),
		counter("conflux_retention_lost_total", "Things retention removed while still needed, by kind.",
			prometheus.Labels{"kind": "delayed"}, b.sm.retention.lostTimers.Load),
		counter("conflux_retention_lost_total", "Things retention removed while still needed, by kind.",
			prometheus.Labels{"kind": "half"}, b.sm.retention.lostHalves.Load),
		counter("conflux_retention_lost_total", "Things retention removed while still needed, by kind.",
			prometheus.Labels{"kind": "unacked"}, b.sm.retention.lostSubs.Load),
		counter("conflux_retention_lost_total", "Things retention removed while still needed, by kind.",
			prometheus.Labels{"kind": "unconsumed"}, b.sm.retention.lostGroups.Load),
		gauge("conflux_scheduled_messages", "Delayed messages and retries not yet delivered.", func() float64 {
			return float64(b.PendingTimers())
		}),
		gauge("conflux_open_transactions", "Half messages neither rolled back nor delivered.", func() float64 {
			return float64(b.OpenTransactions())
		}),
	}
	if reg != nil {
		for _, c := range m.collectors {
			reg.MustRegister(c)
		}
	}
	return m
}

func boolGauge(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

func (m *metrics) produced(n int, d time.Duration) {
	m.producedTotal.Add(float64(n))
	m.commitDelay.Observe(d.Seconds())
}

func (m *metrics) consumed(n int) { m.consumedTotal.Add(float64(n)) }

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
