package api

import (
	"bytes"
	"encoding/json"
	"sync"

	"github.com/kontinuous/kontinuous/pipeline"
)

// buildJSON remembers the JSON of listed builds by ID and store revision:
// a list of builds that did not change since the last list is then a
// concatenation of bytes instead of a hundred reflective encodings. A
// build without a revision (0) is encoded every time.
type buildJSON struct {
	mu sync.RWMutex
	m  map[string]encodedBuild
}

type encodedBuild struct {
	rev  int64
	data []byte // shared, never modified
}

// maxEncodedBuilds bounds the cache; past it about half is dropped.
const maxEncodedBuilds = 8192

// of returns b's JSON (as json.Marshal gives it).
func (c *buildJSON) of(b *pipeline.Build) ([]byte, error) {
	if b.Revision == 0 {
		return json.Marshal(b)
	}
	c.mu.RLock()
	e, ok := c.m[b.ID]
	c.mu.RUnlock()
	if ok && e.rev == b.Revision {
		return e.data, nil
	}
	data, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]encodedBuild{}
	}
	if len(c.m) >= maxEncodedBuilds {
		i := 0
		for k := range c.m {
			if i%2 == 0 {
				delete(c.m, k)
			}
			i++
		}
	}
	if cur, ok := c.m[b.ID]; !ok || cur.rev < b.Revision {
		c.m[b.ID] = encodedBuild{rev: b.Revision, data: data}
	}
	c.mu.Unlock()
	return data, nil
}

// encodeList writes bs as a JSON array followed by a newline, the bytes
// json.Encoder would write.
func (c *buildJSON) encodeList(buf *bytes.Buffer, bs []pipeline.Build) error {
	buf.WriteByte('[')
	for i := range bs {
		if i > 0 {
			buf.WriteByte(',')
		}
		data, err := c.of(&bs[i])
		if err != nil {
			return err
		}
		buf.Write(data)
	}
	buf.WriteString("]\n")
	return nil
}
