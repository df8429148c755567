package loadtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// checkers is how many tasks CheckWritten reads at once: enough to check
// thousands of tasks in seconds, few enough for a small machine.
const checkers = 4

// CheckWritten reads back, through the edge, every task the load created
// and checks it still holds the description of its last acknowledged update,
// and that the upload, if the API acknowledged it, is attached whole: no
// write acknowledged before, during or after a flip is lost. Call it after
// Stop; its own requests are not counted in the report.
func (l *Load) CheckWritten(ctx context.Context) error {
	if !l.stopped.Load() {
		return errors.New("check written tasks: stop the load first")
	}
	l.mu.Lock()
	want := maps.Clone(l.want)
	l.mu.Unlock()

	ids := make(chan int64)
	var mu sync.Mutex
	var problems []string
	var wg sync.WaitGroup
	for range checkers {
		wg.Go(func() {
			for id := range ids {
				if err := l.checkTask(ctx, id, want); err != nil {
					mu.Lock()
					problems = append(problems, err.Error())
					mu.Unlock()
				}
			}
		})
	}
	for _, id := range l.report.Written {
		ids <- id
	}
	close(ids)
	wg.Wait()
	if l.upload != nil && l.report.UploadOK {
		if err := l.checkUpload(ctx); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) == 0 {
		return nil
	}
	slices.Sort(problems)
	shown := problems[:min(len(problems), 10)]
	return fmt.Errorf("%d of %d writes acknowledged to the load are not there: %s",
		len(problems), len(l.report.Written)+btoi(l.report.UploadOK), strings.Join(shown, "; "))
}

func (l *Load) checkTask(ctx context.Context, id int64, want map[int64]string) error {
	rctx, cancel := context.WithTimeout(ctx, l.o.RequestTimeout)
	defer cancel()
	var t struct {
		ID          int64  `json:"id"`
		Description string `json:"description"`
	}
	if _, err := l.do(rctx, true, http.MethodGet, taskPath(id), nil, &t); err != nil {
		return fmt.Errorf("task %d: %w", id, err)
	}
	if d, known := want[id]; t.ID != id || (known && t.Description != d) {
		return fmt.Errorf("task %d: found task %d with description %q, want %q", id, t.ID, t.Description, d)
	}
	return nil
}

func (l *Load) checkUpload(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, l.o.RequestTimeout)
	defer cancel()
	var atts []struct {
		File struct {
			Name string `json:"name"`
			Size int64  `json:"size"`
		} `json:"file"`
	}
	if _, err := l.do(rctx, true, http.MethodGet, fmt.Sprintf("/api/v1/tasks/%d/attachments", l.upload.task), nil, &atts); err != nil {
		return fmt.Errorf("attachments of task %d: %w", l.upload.task, err)
	}
	for _, a := range atts {
		if a.File.Name == uploadName && a.File.Size == l.o.Upload {
			return nil
		}
	}
	return fmt.Errorf("task %d: no attachment %s of %d bytes (attachments %+v)", l.upload.task, uploadName, l.o.Upload, atts)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
