package mqtt

import (
	"reflect"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/conflux-mq/conflux/core/log/batch"
)

// TestTopicMapping: the golden table of MQTT topic → core topic and tag.
func TestTopicMapping(t *testing.T) {
	for _, tc := range []struct{ mqtt, core, tag string }{
		{"site1/dev42/temp", "site1", "dev42"},
		{"site1", "site1", ""},
		{"site1/", "site1", ""},
		{"site1/dev42", "site1", "dev42"},
		{"/site1/x", "mqtt_default", "site1"},
		{"a.b/c", "mqtt_default", "c"},
		{"%RETRY%g/x", "mqtt_default", "x"},
		{"caf\u00e9/x", "mqtt_default", "x"},
		{"ok_name-1|2/x/y/z", "ok_name-1|2", "x"},
	} {
		if got := coreTopicFor(tc.mqtt, "mqtt_default"); got != tc.core {
			t.Errorf("%q: core topic %q, want %q", tc.mqtt, got, tc.core)
		}
		if got := tagFor(tc.mqtt); got != tc.tag {
			t.Errorf("%q: tag %q, want %q", tc.mqtt, got, tc.tag)
		}
	}
	for _, name := range []string{"RMQ_SYS_TRACE_TOPIC", "SCHEDULE_TOPIC_XXXX", "TBW102", "%DLQ%g"} {
		if deliverableTopic(name) {
			t.Errorf("internal topic %q is deliverable to MQTT", name)
		}
	}
}

// TestMessageRoundTrip: a v5 PUBLISH survives toMessage → toPacket, user
// properties with reserved names are not copied, and expiry counts from
// the birth time.
func TestMessageRoundTrip(t *testing.T) {
	pf := byte(1)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, TopicName: "s/d/t",
		Payload: []byte("body"), Properties: packets.Properties{ContentType: "ct", ResponseTopic: "rt",
			CorrelationData: []byte{0, 1}, PayloadFormat: pf, PayloadFormatFlag: true, MessageExpiryInterval: 10,
			User: []packets.UserProperty{{Key: "k", Val: "v"}, {Key: "k", Val: "v2"}, {Key: "TAGS", Val: "x"}, {Key: "MQTT_QOS", Val: "0"}}}}
	m := toMessage(&pk, "cid", "fb")
	if m.Topic != "s" || m.Tags != "d" || m.ShardingKey != "s/d/t" || m.Queue != -1 {
		t.Fatalf("message %+v", m)
	}
	st := &stored{coreTopic: m.Topic, tags: m.Tags, bornMs: 1_000_000, props: m.Properties, body: m.Body}
	out, origin, expired := toPacket(st, 1_000_000+4_000)
	if expired || origin != "cid" {
		t.Fatalf("expired %v origin %q", expired, origin)
	}
	want := packets.Properties{ContentType: "ct", ResponseTopic: "rt", CorrelationData: []byte{0, 1},
		PayloadFormat: 1, PayloadFormatFlag: true, MessageExpiryInterval: 6,
		User: []packets.UserProperty{{Key: "k", Val: "v"}, {Key: "k", Val: "v2"}}}
	if out.TopicName != "s/d/t" || out.FixedHeader.Qos != 2 || string(out.Payload) != "body" || !reflect.DeepEqual(out.Properties, want) {
		t.Fatalf("packet %+v\nprops %+v\nwant  %+v", out, out.Properties, want)
	}
	if _, _, expired := toPacket(st, 1_000_000+10_001); !expired {
		t.Fatal("not expired after its interval")
	}
	// Another protocol's message: topic/tag, QoS 1, system properties hidden.
	other := &stored{coreTopic: "site1", tags: "alarm", props: []batch.Property{{Key: "KEYS", Value: "k"}, {Key: "app", Value: "x"}}}
	out, origin, _ = toPacket(other, 0)
	if out.TopicName != "site1/alarm" || out.FixedHeader.Qos != 1 || origin != "" ||
		!reflect.DeepEqual(out.Properties.User, []packets.UserProperty{{Key: "app", Val: "x"}}) {
		t.Fatalf("other protocol: %+v", out)
	}
}

// FuzzMapping: any publish the broker accepts maps to a core message and
// back to the same topic, QoS, retain flag, payload and user properties
// (those with reserved names aside), and the core topic is always valid.
func FuzzMapping(f *testing.F) {
	f.Add("site1/dev42/temp", []byte("21.5"), byte(1), true, "unit", "C")
	f.Add("/a/b", []byte{}, byte(0), false, "TAGS", "x")
	f.Add("", []byte{0}, byte(2), false, "MQTT_QOS", "0")
	f.Add("caf\u00e9/\u00fc", []byte("x"), byte(2), true, "", "")
	f.Fuzz(func(t *testing.T, topic string, payload []byte, qos byte, retain bool, k, v string) {
		qos %= 3
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
			TopicName: topic, Payload: payload}
		if k != "" {
			pk.Properties.User = []packets.UserProperty{{Key: k, Val: v}}
		}
		m := toMessage(&pk, "cid", "mqtt_default")
		if !validCoreTopic(m.Topic) {
			t.Fatalf("invalid core topic %q for %q", m.Topic, topic)
		}
		out, origin, expired := toPacket(&stored{coreTopic: m.Topic, tags: m.Tags, props: m.Properties, body: m.Body}, 0)
		if expired || origin != "cid" || out.TopicName != topic || out.FixedHeader.Qos != qos ||
			out.FixedHeader.Retain != retain || string(out.Payload) != string(payload) {
			t.Fatalf("round trip of %+v gave %+v (origin %q)", pk, out, origin)
		}
		var want []packets.UserProperty
		if k != "" && !reservedProp(k) {
			want = pk.Properties.User
		}
		if !reflect.DeepEqual(out.Properties.User, want) {
			t.Fatalf("user properties %v, want %v", out.Properties.User, want)
		}
	})
}
