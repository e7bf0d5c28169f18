package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conflux-mq/conflux/core/log/batch"
)

// BenchmarkProduceConsume: 64 producers send one 1 KiB message per call
// (as a RocketMQ sync send does) to one queue per producer of an 8-queue
// topic; one consumer per queue long-polls and reads them. Each op is one
// message. It reports messages/s, produce latency p50/p99 (call → ack) and
// end-to-end p99 (call → read by the consumer). Real disk, fsync on.
func BenchmarkProduceConsume(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			brokers := benchBrokers(b, nodes)
			leader := brokers[0]
			for _, br := range brokers {
				if br.Status().LeaderReady {
					leader = br
				}
			}
			c, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := leader.CreateTopic(c, Topic{Name: "bench", Queues: 8}); err != nil {
				b.Fatal(err)
			}
			const producers = 64
			var sent atomic.Int64
			var mu sync.Mutex
			var prodLat, e2eLat []time.Duration
			var consumed atomic.Int64
			var wg sync.WaitGroup
			// Consumers: one per queue, on the leader.
			for q := range uint32(8) {
				wg.Go(func() {
					var off uint64
					for consumed.Load() < int64(b.N) && c.Err() == nil {
						wc, wcancel := context.WithTimeout(c, 100*time.Millisecond)
						_ = leader.WaitForMessages(wc, "bench", q, off)
						wcancel()
						ms, next, err := leader.Fetch("bench", q, off, FetchOptions{MaxMessages: 256})
						if err != nil {
							b.Error(err)
							return
						}
						now := time.Now()
						var lats []time.Duration
						for _, m := range ms {
							born := int64(binary.LittleEndian.Uint64(m.Body()))
							lats = append(lats, now.Sub(time.Unix(0, born)))
							m.Release()
						}
						consumed.Add(int64(len(ms)))
						mu.Lock()
						e2eLat = append(e2eLat, lats...)
						mu.Unlock()
						off = next
					}
				})
			}
			b.SetBytes(1024)
			b.ResetTimer()
			start := time.Now()
			var pwg sync.WaitGroup
			for p := range producers {
				pwg.Go(func() {
					body := make([]byte, 1024)
					var lats []time.Duration
					for sent.Add(1) <= int64(b.N) {
						t0 := time.Now()
						binary.LittleEndian.PutUint64(body, uint64(t0.UnixNano()))
						m := Message{Message: batch.Message{Topic: "bench", Body: body}, Queue: p % 8}
						if _, err := leader.Produce(c, []Message{m}); err != nil {
							b.Error(err)
							return
						}
						lats = append(lats, time.Since(t0))
					}
					mu.Lock()
					prodLat = append(prodLat, lats...)
					mu.Unlock()
				})
			}
			pwg.Wait()
			deadline := time.Now().Add(30 * time.Second)
			for consumed.Load() < int64(b.N) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			cancel()
			wg.Wait()
			if consumed.Load() < int64(b.N) {
				b.Fatalf("consumed %d of %d", consumed.Load(), b.N)
			}
			slices.Sort(prodLat)
			slices.Sort(e2eLat)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(ms(prodLat[len(prodLat)/2]), "produce-p50-ms")
			b.ReportMetric(ms(prodLat[len(prodLat)*99/100]), "produce-p99-ms")
			b.ReportMetric(ms(e2eLat[len(e2eLat)*99/100]), "e2e-p99-ms")
		})
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func benchBrokers(b *testing.B, n int) []*Broker {
	base := b.TempDir()
	var bs []*Broker
	if n == 1 {
		cfg := testConfig(filepath.Join(base, "n1"))
		cfg.Log.SegmentSizeBytes = 256 << 20
		br, err := Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		bs = append(bs, br)
	} else {
		peers := map[uint64]string{}
		for id := uint64(1); id <= uint64(n); id++ {
			peers[id] = freeAddr(b)
		}
		for id := uint64(1); id <= uint64(n); id++ {
			cfg := testConfig(filepath.Join(base, fmt.Sprint("n", id)))
			cfg.Log.SegmentSizeBytes = 256 << 20
			cfg.NodeID, cfg.Peers, cfg.RaftAddr = id, peers, peers[id]
			br, err := Open(cfg)
			if err != nil {
				b.Fatal(err)
			}
			bs = append(bs, br)
		}
	}
	b.Cleanup(func() {
		for _, br := range bs {
			_ = br.Close()
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, br := range bs {
			if br.Status().LeaderReady {
				return bs
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatal("no leader")
	return nil
}

// BenchmarkProduceLatency: one producer, one message at a time, on a
// three-node cluster, through the leader and through a follower (which
// forwards to the leader and answers once it has applied the entry
// itself). The difference is the cost of entering at a follower.
func BenchmarkProduceLatency(b *testing.B) {
	bs := benchBrokers(b, 3)
	lead := leaderIndex(bs)
	if err := bs[lead].CreateTopic(context.Background(), Topic{Name: "lat", Queues: 1}); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		via  *Broker
	}{{"leader", bs[lead]}, {"follower", bs[(lead+1)%3]}} {
		b.Run(c.name, func(b *testing.B) {
			body := make([]byte, 1024)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if _, err := c.via.Produce(context.Background(), []Message{{Message: batch.Message{Topic: "lat", Body: body}, Queue: 0}}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
			b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
		})
	}
}
