package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// upload is the one large attachment upload of a load.
type upload struct {
	task    int64
	body    *pacedReader
	started chan struct{} // closed once the transport reads the file's first bytes
	done    chan struct{} // closed when the request ended; then slot and err are set
	cancel  context.CancelFunc
	slot    string
	err     error
}

// uploadName is the attachment's file name; CheckWritten looks for it.
const uploadName = "vkimg-load.bin"

// startUpload creates a task for the attachment and starts uploading to it.
func (l *Load) startUpload(ctx context.Context) (*upload, error) {
	var t struct {
		ID int64 `json:"id"`
	}
	path := fmt.Sprintf("/api/v1/projects/%d/tasks", l.project)
	if _, err := l.do(ctx, true, http.MethodPut, path, map[string]string{"title": "load upload"}, &t); err != nil {
		return nil, fmt.Errorf("create the upload's task: %w", err)
	}
	if t.ID <= 0 {
		return nil, fmt.Errorf("create the upload's task: the answer has no task id")
	}

	// The multipart framing is computed up front so the request carries a
	// Content-Length, as a browser's upload does.
	var head, tail bytes.Buffer
	mw := multipart.NewWriter(&head)
	if _, err := mw.CreateFormFile("files", uploadName); err != nil {
		return nil, fmt.Errorf("upload framing: %w", err)
	}
	frame := head.Len()
	if err := mw.Close(); err != nil {
		return nil, fmt.Errorf("upload framing: %w", err)
	}
	tail.Write(head.Bytes()[frame:])
	head.Truncate(frame)

	uctx, cancel := context.WithCancel(context.Background())
	u := &upload{
		task:    t.ID,
		started: make(chan struct{}),
		done:    make(chan struct{}),
		cancel:  cancel,
	}
	u.body = &pacedReader{ctx: uctx, size: l.o.Upload, rate: l.o.UploadRate, first: u.started}
	req, err := http.NewRequestWithContext(uctx, http.MethodPut,
		fmt.Sprintf("%s/api/v1/tasks/%d/attachments", l.o.BaseURL, t.ID),
		io.MultiReader(&head, u.body, &tail))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("upload request: %w", err)
	}
	req.ContentLength = int64(head.Len()) + l.o.Upload + int64(tail.Len())
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+l.token)
	// The upload is meant to outlast the client's own timeout; it is bounded
	// by Options.UploadTimeout instead. A copy leaves the workers' client as
	// it is.
	c := *l.clients[true]
	c.Timeout = 0
	go func() {
		defer close(u.done)
		u.slot, u.err = u.send(&c, req, l.o.Upload)
	}()
	return u, nil
}

func (u *upload) send(c *http.Client, req *http.Request, size int64) (string, error) {
	resp, err := c.Do(req)
	if err != nil {
		return "", transportError(err)
	}
	defer resp.Body.Close()
	var got struct {
		Errors  []any `json:"errors"`
		Success []struct {
			File struct {
				Size int64 `json:"size"`
			} `json:"file"`
		} `json:"success"`
	}
	slot := resp.Header.Get(SlotHeader)
	if err := answer(resp, true, &got); err != nil {
		return slot, err
	}
	if len(got.Errors) > 0 || len(got.Success) != 1 || got.Success[0].File.Size != size {
		return slot, fmt.Errorf("the API did not store the %d bytes: errors %v, stored %+v", size, got.Errors, got.Success)
	}
	return slot, nil
}

// wait waits for the upload to end, and cuts it after timeout.
func (u *upload) wait(timeout time.Duration) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-u.done:
		return
	case <-t.C:
	}
	u.cancel()
	<-u.done
	u.err = fmt.Errorf("not finished %s after the load stopped, cut: %w", timeout, u.err)
}

// pacedReader is the upload's file: size bytes of a fixed pattern, handed
// out no faster than rate bytes/s (any speed when rate is 0).
type pacedReader struct {
	ctx        context.Context
	size, rate int64
	first      chan struct{}
	once       sync.Once
	start      time.Time
	sent       atomic.Int64
}

// chunk is what one Read hands out at most: small enough that pacing is
// smooth, large enough that the rate costs little CPU.
const chunk = 32 << 10

var pattern = func() []byte {
	line := []byte("vkimg load upload\n")
	return bytes.Repeat(line, chunk/len(line)+1)
}()

func (p *pacedReader) Read(b []byte) (int, error) {
	p.once.Do(func() {
		p.start = time.Now()
		close(p.first)
	})
	sent := p.sent.Load()
	n := min(int64(len(b)), chunk, p.size-sent)
	if n <= 0 {
		return 0, io.EOF
	}
	if p.rate > 0 {
		due := p.start.Add(time.Duration(float64(sent+n) / float64(p.rate) * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-p.ctx.Done():
				t.Stop()
				return 0, p.ctx.Err()
			case <-t.C:
			}
		}
	}
	copy(b[:n], pattern)
	p.sent.Add(n)
	return int(n), nil
}
