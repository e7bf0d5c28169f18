package remoting

import (
	"strconv"
	"time"

	"github.com/conflux-mq/conflux/core/broker"
	"github.com/conflux-mq/conflux/core/log/batch"
	"github.com/conflux-mq/conflux/gateway/remoting/command"
)

// Properties that schedule a message (remoting.md §6, §7.3).
const (
	propTimerDeliverMs = "TIMER_DELIVER_MS"
	propTimerDelaySec  = "TIMER_DELAY_SEC"
	propTimerDelayMs   = "TIMER_DELAY_MS"
	propStartDeliver   = "__STARTDELIVERTIME" // Aliyun ONS clients
	propTranMsg        = "TRAN_MSG"
	propTxnID          = "__transactionId__"
	sysFlagPrepared    = 0x4
)

// schedule reads the transaction flag and the delay properties of sent
// messages into the core's Half and DeliverAt (the core stores them in its
// system topics). It answers MESSAGE_ILLEGAL (13) for a bad or too long
// delay, as Java does for timers beyond timerMaxDelaySec.
func (d *brokerDoor) schedule(msgs []broker.Message, sysFlag int64, now time.Time) (command.ResponseCode, string) {
	for i := range msgs {
		m := &msgs[i]
		if sysFlag&sysFlagPrepared != 0 || prop(m.Properties, propTranMsg) == "true" {
			// A half message: timers are ignored, as in Java.
			m.Half = true
			if prop(m.Properties, propTxnID) == "" {
				if id := prop(m.Properties, propUniq); id != "" {
					m.Properties = append(m.Properties, batch.Property{Key: propTxnID, Value: id})
				}
			}
			continue
		}
		at, ok, err := deliverTime(m.Properties, now, d.b.DelayForLevel)
		if err != nil {
			return command.MessageIllegal, err.Error()
		}
		if !ok {
			continue
		}
		if at.Sub(now) > d.b.MaxDelay() {
			return command.MessageIllegal, "delay beyond the maximum of " + d.b.MaxDelay().String()
		}
		m.DeliverAt = at
	}
	return command.Success, ""
}

// deliverTime: the DELAY level first, then RocketMQ 5's timer properties.
func deliverTime(ps []batch.Property, now time.Time, level func(int) time.Duration) (time.Time, bool, error) {
	if v := prop(ps, propDelay); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return time.Time{}, false, errBadProperty(propDelay, v)
		}
		if n <= 0 {
			return time.Time{}, false, nil
		}
		return now.Add(level(n)), true, nil
	}
	for _, k := range []string{propTimerDeliverMs, propStartDeliver} {
		if v := prop(ps, k); v != "" {
			ms, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return time.Time{}, false, errBadProperty(k, v)
			}
			return time.UnixMilli(ms), true, nil
		}
	}
	for _, k := range []struct {
		key  string
		unit time.Duration
	}{{propTimerDelaySec, time.Second}, {propTimerDelayMs, time.Millisecond}} {
		if v := prop(ps, k.key); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || n > int64(1<<62)/int64(k.unit) {
				return time.Time{}, false, errBadProperty(k.key, v)
			}
			return now.Add(time.Duration(n) * k.unit), true, nil
		}
	}
	return time.Time{}, false, nil
}

type badProperty struct{ key, value string }

func (e badProperty) Error() string { return "bad " + e.key + " property " + strconv.Quote(e.value) }

func errBadProperty(k, v string) error { return badProperty{k, v} }

func prop(ps []batch.Property, key string) string {
	for _, p := range ps {
		if p.Key == key {
			return p.Value
		}
	}
	return ""
}

// retryDelay is the back-off of a consumer send-back (remoting.md §7.2):
// the level the consumer asked for, or 3 + the times already reconsumed.
func (d *brokerDoor) retryDelay(delayLevel, reconsumed int64) time.Duration {
	level := delayLevel
	if level <= 0 {
		level = 3 + reconsumed
	}
	return d.b.DelayForLevel(int(min(level, int64(d.b.DelayLevels()))))
}
