package testenv

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// The node's images are written here as OCI image tarballs, from files of
// the host, and imported into containerd: no registry is involved.
//
//   - BusyboxImage: /bin/busybox (busybox-static) and a link per applet.
//   - pauseImage: the same, running sleep (containerd's sandbox image).
//   - ClonerImage: busybox plus the host's git, git-remote-http and the
//     shared libraries they load (found with ldd), so the executor's clone
//     script runs unchanged.

// layerFile is one entry of an image layer.
type layerFile struct {
	name string // path without a leading slash
	mode int64
	link string // symlink target, for a symlink
	data []byte
	dir  bool
}

// writeImages writes the three tarballs into dir and returns their paths.
func writeImages(dir string) ([]string, error) {
	bb, err := busyboxFiles()
	if err != nil {
		return nil, err
	}
	git, err := gitFiles()
	if err != nil {
		return nil, err
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	images := []struct {
		name       string
		files      []layerFile
		entrypoint []string
		cmd        []string
	}{
		{BusyboxImage, bb, nil, []string{"/bin/sh"}},
		{pauseImage, bb, []string{"/bin/sleep", "2147483647"}, nil},
		{ClonerImage, append(slices.Clone(bb), git...), nil, []string{"/bin/sh"}},
	}
	var out []string
	for i, im := range images {
		p := filepath.Join(dir, fmt.Sprintf("image-%d.tar", i))
		if err := writeOCI(p, im.name, im.files, env, im.entrypoint, im.cmd); err != nil {
			return nil, fmt.Errorf("image %s: %w", im.name, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// busyboxFiles is a root file system of busybox-static.
func busyboxFiles() ([]layerFile, error) {
	bin, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, err
	}
	list, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	files := []layerFile{
		{name: "bin", dir: true, mode: 0o755},
		{name: "etc", dir: true, mode: 0o755},
		{name: "tmp", dir: true, mode: 0o1777},
		{name: "root", dir: true, mode: 0o700},
		{name: "bin/busybox", mode: 0o755, data: bin},
		{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnogroup:x:65534:\n")},
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		files = append(files, layerFile{name: "bin/" + applet, link: "busybox", mode: 0o777})
	}
	return files, nil
}

// gitFiles is the host's git with what it loads: git, git-remote-http(s)
// in git's exec path, their shared libraries and git's templates.
func gitFiles() ([]layerFile, error) {
	gitBin, err := exec.LookPath("git")
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(gitBin, "--exec-path").Output()
	if err != nil {
		return nil, fmt.Errorf("git --exec-path: %w", err)
	}
	execPath := strings.TrimSpace(string(out))
	remote := filepath.Join(execPath, "git-remote-http")
	type copyFile struct{ src, dst string }
	copies := []copyFile{
		{gitBin, "/usr/bin/git"},
		{gitBin, filepath.Join(execPath, "git")},
		{remote, filepath.Join(execPath, "git-remote-http")},
		{remote, filepath.Join(execPath, "git-remote-https")},
	}
	libs := map[string]bool{}
	for _, b := range []string{gitBin, remote} {
		deps, err := sharedLibraries(b)
		if err != nil {
			return nil, err
		}
		for _, d := range deps {
			libs[d] = true
		}
	}
	for l := range libs {
		copies = append(copies, copyFile{l, l})
	}
	var files []layerFile
	dirs := map[string]bool{"bin": true, "etc": true, "tmp": true, "root": true}
	addDirs := func(p string) {
		var parents []string
		for d := path.Dir(p); d != "." && d != "/" && d != ""; d = path.Dir(d) {
			parents = append(parents, d)
		}
		for i := len(parents) - 1; i >= 0; i-- {
			d := strings.TrimPrefix(parents[i], "/")
			if !dirs[d] {
				dirs[d] = true
				files = append(files, layerFile{name: d, dir: true, mode: 0o755})
			}
		}
	}
	for _, c := range copies {
		data, err := os.ReadFile(c.src) // follows symlinks: the library itself
		if err != nil {
			return nil, err
		}
		addDirs(c.dst)
		files = append(files, layerFile{name: strings.TrimPrefix(c.dst, "/"), mode: 0o755, data: data})
	}
	// Templates spare git init a warning; optional.
	tmpl := "/usr/share/git-core/templates"
	_ = filepath.WalkDir(tmpl, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			addDirs(p + "/x")
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err == nil {
			files = append(files, layerFile{name: strings.TrimPrefix(p, "/"), mode: 0o644, data: data})
		}
		return nil
	})
	return files, nil
}

// sharedLibraries lists the libraries (and the loader) a dynamic binary
// loads, by ldd.
func sharedLibraries(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	var libs []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0]) // the loader
		}
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s found no libraries", bin)
	}
	return libs, nil
}

// writeOCI writes an OCI image layout tarball of one single-layer image
// named name, as `ctr images import` reads it.
func writeOCI(dst, name string, files []layerFile, env, entrypoint, cmd []string) error {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Format: tar.FormatPAX}
		switch {
		case f.dir:
			h.Typeflag, h.Name = tar.TypeDir, f.name+"/"
		case f.link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.link
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.data); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layerDigest := digest(layer.Bytes())
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Env": env, "Entrypoint": entrypoint, "Cmd": cmd},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor("application/vnd.oci.image.config.v1+json", config),
		"layers":        []any{descriptor("application/vnd.oci.image.layer.v1.tar", layer.Bytes())},
	})
	if err != nil {
		return err
	}
	md := descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
	md["annotations"] = map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name[strings.LastIndex(name, ":")+1:]}
	md["platform"] = map[string]string{"architecture": "amd64", "os": "linux"}
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []any{md}})
	if err != nil {
		return err
	}

	var out bytes.Buffer
	ow := tar.NewWriter(&out)
	add := func(name string, data []byte) error {
		if err := ow.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := ow.Write(data)
		return err
	}
	for _, e := range []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(config), config},
		{blobPath(manifest), manifest},
		{blobPath(layer.Bytes()), layer.Bytes()},
	} {
		if err := add(e.name, e.data); err != nil {
			return err
		}
	}
	if err := ow.Close(); err != nil {
		return err
	}
	return os.WriteFile(dst, out.Bytes(), 0o600)
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func blobPath(b []byte) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest(b), "sha256:")
}

func descriptor(mediaType string, b []byte) map[string]any {
	return map[string]any{"mediaType": mediaType, "digest": digest(b), "size": len(b)}
}
