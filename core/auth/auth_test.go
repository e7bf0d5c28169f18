package auth

import (
	"strings"
	"testing"
)

// cheap keeps the tests fast; the parameters travel in the hash.
var cheap = HashParams{MemoryKiB: 64, Time: 1, Threads: 1}

func TestPasswordHashAndVerify(t *testing.T) {
	h, err := HashPassword("s3cret", cheap)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash %q is not an argon2id PHC string with its parameters", h)
	}
	if strings.Contains(h, "s3cret") {
		t.Fatal("the hash contains the password")
	}
	h2, _ := HashPassword("s3cret", cheap)
	if h == h2 {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	for pw, want := range map[string]bool{"s3cret": true, "s3cret ": false, "": false, "S3cret": false} {
		ok, err := VerifyPassword(h, pw)
		if err != nil || ok != want {
			t.Errorf("VerifyPassword(%q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
	if _, err := HashPassword(strings.Repeat("x", MaxPasswordBytes+1), cheap); err == nil {
		t.Error("an over-long password was hashed")
	}
}

func TestVerifyRefusesBadHashes(t *testing.T) {
	good, _ := HashPassword("pw", cheap)
	parts := strings.Split(good, "$")
	for name, h := range map[string]string{
		"empty":           "",
		"bcrypt":          "$2a$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
		"argon2i":         strings.Replace(good, "argon2id", "argon2i", 1),
		"version":         strings.Replace(good, "v=19", "v=16", 1),
		"huge memory":     strings.Join([]string{"", "argon2id", "v=19", "m=4294967295,t=1,p=1", parts[4], parts[5]}, "$"),
		"zero time":       strings.Join([]string{"", "argon2id", "v=19", "m=64,t=0,p=1", parts[4], parts[5]}, "$"),
		"bad salt base64": strings.Join([]string{"", "argon2id", "v=19", "m=64,t=1,p=1", "!!!", parts[5]}, "$"),
		"short key":       strings.Join([]string{"", "argon2id", "v=19", "m=64,t=1,p=1", parts[4], "AAAA"}, "$"),
	} {
		if ok, err := VerifyPassword(h, "pw"); ok || err == nil {
			t.Errorf("%s: VerifyPassword = %v, %v; want an error", name, ok, err)
		}
	}
}

func FuzzVerifyPassword(f *testing.F) {
	good, _ := HashPassword("pw", cheap)
	f.Add(good, "pw")
	f.Add("$argon2id$v=19$m=8,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "")
	f.Fuzz(func(t *testing.T, hash, pw string) {
		// Cheap parameters only: the bounds let a stored hash ask for up
		// to 1 GiB, which is a valid (if slow) request, not a bug.
		if p, _, _, err := parseHash(hash); err == nil && (p.MemoryKiB > 1024 || p.Time > 2 || p.Threads > 2) {
			return
		}
		ok, err := VerifyPassword(hash, pw)
		if ok && err != nil {
			t.Fatal("ok with an error")
		}
	})
}

func FuzzDecodeUser(f *testing.F) {
	u := User{Name: "dev", Tags: []string{"x"}, VHosts: map[string]VHostPerm{"/": {".*", ".*", ".*"}},
		MQTT: []TopicRule{{Allow: true, Action: ActAll, Filter: "d/%c/#"}}}
	b, _ := u.Encode()
	f.Add(b)
	f.Add([]byte(`{"name":"x","mqtt":[{"allow":true,"action":"nope","filter":""}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := DecodeUser(b)
		if err != nil {
			return
		}
		if u.Validate() == nil {
			// A valid user answers every question without panicking.
			u.AllowMQTT("c", "a/b", false)
			u.AllowMQTT("c", "a/#", true)
			u.AllowAMQP("/", Read, "q")
			u.AllowRocketTopic("t", PermPub)
			u.AllowRocketGroup("g", PermSub)
		}
	})
}

func TestFilterCovers(t *testing.T) {
	for _, c := range []struct {
		filter, sub string
		want        bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"a/#", "a/+", true},
		{"a/#", "a/#", true},
		{"a/+", "a/#", false}, // subscribing to a/# reaches deeper than a/+
		{"a/+", "a/+", true},
		{"#", "x/y", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"a/b/c", "a/b", false},
	} {
		if got := FilterCovers(c.filter, c.sub); got != c.want {
			t.Errorf("FilterCovers(%q, %q) = %v, want %v", c.filter, c.sub, got, c.want)
		}
	}
}

func TestMQTTRules(t *testing.T) {
	u := User{Name: "dev7", MQTT: []TopicRule{
		{Allow: false, Action: ActPublish, Filter: "devices/%u/secret"},
		{Allow: true, Action: ActAll, Filter: "devices/%u/#"},
		{Allow: true, Action: ActSubscribe, Filter: "broadcast/#"},
		{Allow: true, Action: ActPublish, Filter: "clients/%c"},
	}}
	for _, c := range []struct {
		client, topic string
		sub, want     bool
	}{
		{"c1", "devices/dev7/temp", false, true},
		{"c1", "devices/dev7/#", true, true},
		{"c1", "devices/dev8/temp", false, false},
		{"c1", "devices/+/temp", true, false}, // would reach other users' topics
		{"c1", "devices/dev7/secret", false, false},
		{"c1", "devices/dev7/secret", true, true},
		{"c1", "broadcast/all", true, true},
		{"c1", "broadcast/all", false, false},
		{"c1", "clients/c1", false, true},
		{"c2", "clients/c1", false, false},
		{"c1", "other", false, false},
		// A client id with a wildcard or a separator must not widen %c.
		{"#", "clients/anything", false, false},
		{"+", "clients/x", false, false},
		{"a/b", "clients/a/b", false, false},
	} {
		if got := u.AllowMQTT(c.client, c.topic, c.sub); got != c.want {
			t.Errorf("AllowMQTT(%q, %q, subscribe=%v) = %v, want %v", c.client, c.topic, c.sub, got, c.want)
		}
	}
	// A deny rule with %c refuses a client id that would slip past it.
	d := User{Name: "d", MQTT: []TopicRule{{Allow: false, Action: ActPublish, Filter: "x/%c/secret"}, {Allow: true, Action: ActAll, Filter: "x/#"}}}
	if d.AllowMQTT("+", "x/foo/secret", false) || !d.AllowMQTT("c1", "x/foo/secret", false) {
		t.Error("a deny rule with a client-id placeholder was slipped past, or refused a plain client id")
	}
	admin := User{Name: "root", Tags: []string{TagAdministrator}}
	if !admin.AllowMQTT("c", "anything/#", true) {
		t.Error("an administrator was refused")
	}
	admin.MQTT = []TopicRule{{Allow: false, Action: ActSubscribe, Filter: "test/nosubscribe"}, {Allow: true, Action: ActAll, Filter: "#"}}
	if admin.AllowMQTT("c", "test/nosubscribe", true) || !admin.AllowMQTT("c", "test/other", true) {
		t.Error("an administrator's own MQTT rules were not applied")
	}
}

func TestAMQPPermissions(t *testing.T) {
	u := User{Name: "app", VHosts: map[string]VHostPerm{
		"/":    {Configure: "^app\\.", Write: "^(app\\..*|amq\\.default)$", Read: ""},
		"prod": {Configure: ".*", Write: ".*", Read: ".*"},
	}}
	for _, c := range []struct {
		vhost, name string
		a           AMQPAction
		want        bool
	}{
		{"/", "app.orders", Configure, true},
		{"/", "orders", Configure, false},
		{"/", "x.app.orders", Configure, false},
		{"/", "app.orders", Write, true},
		{"/", "", Write, true}, // the default exchange is amq.default
		{"/", "app.orders", Read, false},
		{"prod", "anything", Read, true},
		{"other", "anything", Read, false},
	} {
		if got := u.AllowAMQP(c.vhost, c.a, c.name); got != c.want {
			t.Errorf("AllowAMQP(%q, %v, %q) = %v, want %v", c.vhost, c.a, c.name, got, c.want)
		}
	}
	if !u.CanOpenVHost("prod") || u.CanOpenVHost("other") {
		t.Error("CanOpenVHost")
	}
}

func TestRocketPermissions(t *testing.T) {
	u := User{Name: "rk", Rocket: RocketPerms{DefaultTopic: PermDeny, DefaultGroup: PermSub,
		Topics: map[string]string{"orders": PermPubSub, "audit": PermPub, "feed": PermSub},
		Groups: map[string]string{"blocked": PermDeny}}}
	for _, c := range []struct {
		topic, want string
		ok          bool
	}{
		{"orders", PermPub, true}, {"orders", PermSub, true},
		{"audit", PermPub, true}, {"audit", PermSub, false},
		{"feed", PermPub, false}, {"feed", PermSub, true},
		{"other", PermPub, false},
	} {
		if got := u.AllowRocketTopic(c.topic, c.want); got != c.ok {
			t.Errorf("AllowRocketTopic(%q, %s) = %v, want %v", c.topic, c.want, got, c.ok)
		}
	}
	if !u.AllowRocketGroup("g1", PermSub) || u.AllowRocketGroup("blocked", PermSub) {
		t.Error("group permissions")
	}
}

func TestValidate(t *testing.T) {
	ok := User{Name: "a", VHosts: map[string]VHostPerm{"/": {".*", ".*", ".*"}}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, u := range map[string]User{
		"empty name":  {},
		"colon":       {Name: "a:b"},
		"control":     {Name: "a\nb"},
		"bad regex":   {Name: "a", VHosts: map[string]VHostPerm{"/": {Configure: "("}}},
		"bad action":  {Name: "a", MQTT: []TopicRule{{Action: "read", Filter: "x"}}},
		"bad perm":    {Name: "a", Rocket: RocketPerms{DefaultTopic: "ALL"}},
		"bad hash":    {Name: "a", PasswordHash: "plain"},
		"empty rule":  {Name: "a", MQTT: []TopicRule{{Action: ActAll}}},
		"topic perm":  {Name: "a", Rocket: RocketPerms{Topics: map[string]string{"t": ""}}},
		"long regexp": {Name: "a", VHosts: map[string]VHostPerm{"/": {Read: strings.Repeat("a", MaxRegexBytes+1)}}},
	} {
		if err := u.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, u)
		}
	}
}

func TestPublicHidesSecrets(t *testing.T) {
	h, _ := HashPassword("pw", cheap)
	p := User{Name: "a", PasswordHash: h, RocketSecret: "sk"}.Public()
	if p.PasswordHash != "" || p.RocketSecret == "sk" {
		t.Fatalf("Public shows secrets: %+v", p)
	}
}
