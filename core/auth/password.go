package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// HashParams are argon2id's costs for a new password hash.
type HashParams struct {
	MemoryKiB uint32
	Time      uint32
	Threads   uint8
}

// DefaultHashParams: 512 KiB, one pass (about 0.5 ms on this project's
// 2-core reference machine). The budget (docs/security.md): ten thousand
// devices that each have their own password must be able to log in within
// 10 s of a restart, when no verified credential is cached yet. Memory
// hardness still makes each guess cost an attacker 512 KiB of fast
// memory; the parameters travel in each hash, so a deployment with fewer
// or steadier clients can store costlier ones (--password-hash-memory-kib).
var DefaultHashParams = HashParams{MemoryKiB: 512, Time: 1, Threads: 1}

// Bounds on the parameters read from a stored hash, so that a damaged or
// hostile record cannot make a login allocate without limit.
const (
	maxMemoryKiB = 1 << 20 // 1 GiB
	maxTime      = 64
	saltBytes    = 16
	keyBytes     = 32
	// MaxPasswordBytes bounds what is hashed at all.
	MaxPasswordBytes = 1024
)

// ErrBadHash: a stored hash that is not an argon2id PHC string this
// package can check.
var ErrBadHash = errors.New("auth: unreadable password hash")

// HashPassword returns the PHC string of password with a new random salt.
func HashPassword(password string, p HashParams) (string, error) {
	if len(password) > MaxPasswordBytes {
		return "", fmt.Errorf("auth: password longer than %d bytes", MaxPasswordBytes)
	}
	if p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxMemoryKiB || p.Time < 1 || p.Time > maxTime || p.Threads < 1 {
		return "", fmt.Errorf("auth: hash parameters out of range: %+v", p)
	}
	salt := make([]byte, saltBytes)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, keyBytes)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Time, p.Threads,
		enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// VerifyPassword reports whether password matches the PHC string hash.
func VerifyPassword(hash, password string) (bool, error) {
	if len(password) > MaxPasswordBytes {
		return false, nil
	}
	p, salt, key, err := parseHash(hash)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(key)))
	return subtle.ConstantTimeCompare(got, key) == 1, nil
}

func parseHash(hash string) (HashParams, []byte, []byte, error) {
	var p HashParams
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, ErrBadHash
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return p, nil, nil, ErrBadHash
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &p.Threads); err != nil {
		return p, nil, nil, ErrBadHash
	}
	if p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxMemoryKiB || p.Time < 1 || p.Time > maxTime || p.Threads < 1 {
		return p, nil, nil, ErrBadHash
	}
	enc := base64.RawStdEncoding
	salt, err1 := enc.DecodeString(parts[4])
	key, err2 := enc.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(key) < 16 || len(key) > 64 {
		return p, nil, nil, ErrBadHash
	}
	return p, salt, key, nil
}
