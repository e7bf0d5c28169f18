package mqtt

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// connectBytes builds a CONNECT; a nil user or password leaves its field
// (and flag) out.
func connectBytes(version byte, will bool, user, password []byte) []byte {
	name := "MQTT"
	if version == 3 {
		name = "MQIsdp"
	}
	flags := byte(0x02)
	if will {
		flags |= 0x04 | 0x08 // QoS 1
	}
	if user != nil {
		flags |= 0x80
	}
	if password != nil {
		flags |= 0x40
	}
	body := append(str16(name), version, flags, 0, 30)
	if version == 5 {
		body = append(body, 5, 0x11, 0, 0, 0, 60) // session expiry 60
	}
	body = append(body, str16("cid")...)
	if will {
		if version == 5 {
			body = append(body, 5, 0x18, 0, 0, 0, 1) // will delay 1
		}
		body = append(body, str16("will/t")...)
		body = append(body, str16("bye")...)
	}
	if user != nil {
		body = append(body, str16(string(user))...)
	}
	if password != nil {
		body = append(body, str16(string(password))...)
	}
	return frame(0x10, body)
}

// throughConnectConn returns what mochi reads of in through connectConn.
func throughConnectConn(t *testing.T, in []byte) []byte {
	t.Helper()
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		_, _ = client.Write(in)
		client.Close()
	}()
	out, err := io.ReadAll(newConnectConn(server, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func decodeConnect(t *testing.T, b []byte) packets.Packet {
	t.Helper()
	var fh packets.FixedHeader
	if err := fh.Decode(b[0]); err != nil {
		t.Fatal(err)
	}
	n, mul, i := 0, 1, 1
	for ; ; i++ {
		n += int(b[i]&0x7f) * mul
		if b[i]&0x80 == 0 {
			break
		}
		mul *= 128
	}
	if len(b) != i+1+n {
		t.Fatalf("remaining length %d, body %d bytes", n, len(b)-i-1)
	}
	pk := packets.Packet{FixedHeader: fh}
	if err := pk.ConnectDecode(b[i+1:]); err != nil {
		t.Fatal(err)
	}
	return pk
}

// TestConnectConnEmptyPassword: connectConn takes an empty password out
// of a CONNECT of every version, with or without a will, and leaves
// every other CONNECT, and whatever follows it, byte for byte.
func TestConnectConnEmptyPassword(t *testing.T) {
	follow := []byte{0xC0, 0} // a PINGREQ after the CONNECT
	for _, version := range []byte{3, 4, 5} {
		for _, will := range []bool{false, true} {
			empty := connectBytes(version, will, []byte("dev"), []byte{})
			out := throughConnectConn(t, append(empty, follow...))
			if !bytes.HasSuffix(out, follow) {
				t.Fatalf("v%d will=%v: the bytes after the CONNECT changed", version, will)
			}
			pk := decodeConnect(t, out[:len(out)-len(follow)])
			if pk.Connect.PasswordFlag || len(pk.Connect.Password) != 0 || string(pk.Connect.Username) != "dev" ||
				pk.Connect.ClientIdentifier != "cid" || pk.Connect.WillFlag != will || pk.ProtocolVersion != version {
				t.Fatalf("v%d will=%v: rewritten CONNECT decodes as %+v", version, will, pk.Connect)
			}
			if will && (pk.Connect.WillTopic != "will/t" || string(pk.Connect.WillPayload) != "bye") {
				t.Fatalf("v%d: the will changed: %+v", version, pk.Connect)
			}
			if pk.ConnectValidate() != packets.CodeSuccess {
				t.Fatalf("v%d will=%v: rewritten CONNECT invalid: %v", version, will, pk.ConnectValidate())
			}

			for _, same := range [][]byte{
				connectBytes(version, will, []byte("dev"), []byte("pw")),
				connectBytes(version, will, []byte("dev"), nil),
				connectBytes(version, will, nil, nil),
			} {
				if out := throughConnectConn(t, same); !bytes.Equal(out, same) {
					t.Fatalf("v%d will=%v: CONNECT changed:\n%x\n%x", version, will, same, out)
				}
			}
		}
	}
	// Not a CONNECT, a truncated one, garbage: passed on as they are.
	for _, in := range [][]byte{
		{0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5},
		connectBytes(4, false, []byte("dev"), []byte{})[:9],
		{0x10, 0xff, 0xff, 0xff, 0xff, 0x01},
	} {
		if out := throughConnectConn(t, in); !bytes.Equal(out, in) {
			t.Fatalf("%x came out as %x", in, out)
		}
	}
}
