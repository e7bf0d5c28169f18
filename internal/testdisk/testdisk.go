// Package testdisk gives tests a small file system of their own, so a full
// disk can be had for real: a tmpfs mounted for the test, unmounted at its
// end. Mounting needs root; without it the test skips, except under
// CI=true, where CI runs as root and a skip would hide a regression.
package testdisk

import (
	"os"
	"os/exec"
	"testing"
)

// Mount mounts a tmpfs of size (mount's syntax: "512k", "320m") on dir
// until the test ends. Register it before anything that keeps files open
// there: cleanups run last-in first-out.
func Mount(t testing.TB, dir, size string) {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("CI") == "true" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("needs root to mount a small tmpfs (run as root, as CI does)")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		skip("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		// If a failed test left a file open, detach the mount rather than
		// leave it behind.
		if _, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", dir, err, out)
			}
		}
	})
}
