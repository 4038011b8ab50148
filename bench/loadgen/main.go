// Command loadgen drives the benchmark's streams: N concurrent POSTs ramped over a time,
// each reading the Server-Sent Events answer and timing it as a browser would see it.
//
// Standard library only (Debian's golang-go; no module downloads). Each stream posts
// {"messages": [...], "model": "<model>&tag=<tag>-<i>"} to -url on a fresh connection,
// parses the event stream (id, event, data lines; comments skipped), and records the
// time to the first delta, the gaps between deltas, whether a done event arrived, and
// whether the concatenated delta content equals the simulator's text for -tokens tokens.
// With -leave-after K it closes the connection after K deltas and records when (Unix
// seconds), so the caller can compare with the upstream simulator's close time; such a
// stream counts as completed when it left as planned, and byte-exact when what it saw
// begins the simulator's text. An error event ends the stream; its data (Rill's {"code",
// "message"}) is kept in errors as "error event: <data>".
// With -follow <base URL> each stream gets a second tab: once the start event names the
// stream, a GET <base>/api/chat/<id>/events reads it from its beginning to its end (on
// another instance, when -follow names one), as a browser's second tab or a resume does;
// its outcome and the lag of each of its deltas behind the first tab's (matched by event
// id) are summed in "follow".
// Prints one JSON object on stdout.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

type result struct {
	status   int
	err      string
	ttft     float64 // ms from the request to the first delta; <0 if none
	gaps     []float32
	done     bool
	finish   string
	exact    bool
	tokens   int
	leftUnix float64
	tag      string
	arrivals []arrival // each delta's id and arrival, with -follow only
	follower *result   // the second tab's, with -follow only
}

type arrival struct {
	id string
	at time.Time
}

// outcomes counts how streams ended (a summary's first fields).
type outcomes struct {
	Streams   int            `json:"streams"`
	Completed int            `json:"completed"`
	Exact     int            `json:"exact"`
	Tokens    int            `json:"tokens"`
	Statuses  map[string]int `json:"statuses"`
	Errors    map[string]int `json:"errors"`
}

func newOutcomes(streams int) outcomes {
	return outcomes{Streams: streams, Statuses: map[string]int{}, Errors: map[string]int{}}
}

// add counts r: complete when it ended in done "stop", or left as planned.
func (o *outcomes) add(r *result) {
	o.Statuses[fmt.Sprint(r.status)]++
	if r.err != "" {
		o.Errors[r.err]++
	}
	if r.leftUnix > 0 || (r.done && r.finish == "stop" && r.status == 200) {
		o.Completed++
		if r.exact {
			o.Exact++
		}
	}
	o.Tokens += r.tokens
}

type followSummary struct {
	outcomes
	JoinMs   []float64 `json:"join_ms"` // from its GET to its first delta
	LagP50ms float64   `json:"lag_p50_ms"`
	LagP99ms float64   `json:"lag_p99_ms"`
	LagCount int       `json:"lag_count"`
}

type summary struct {
	outcomes
	Finish      map[string]int     `json:"finish_reasons"`
	TTFTms      []float64          `json:"ttft_ms"`
	ITLp50ms    float64            `json:"itl_p50_ms"`
	ITLp99ms    float64            `json:"itl_p99_ms"`
	ITLcount    int                `json:"itl_count"`
	Left        map[string]float64 `json:"left"`
	WallSeconds float64            `json:"wall_s"`
	Follow      *followSummary     `json:"follow,omitempty"`
}

func expected(tokens int) string {
	var b strings.Builder
	for i := 0; i < tokens; i++ {
		fmt.Fprintf(&b, "tok%d ", i)
	}
	return b.String()
}

func main() {
	url := flag.String("url", "", "POST endpoint, e.g. http://127.0.0.1:8000/api/chat")
	n := flag.Int("n", 1, "streams")
	ramp := flag.Float64("ramp", 0, "seconds over which stream starts are spread")
	model := flag.String("model", "sim", "model string; &tag=<tag>-<i> is appended")
	tag := flag.String("tag", "bench", "tag prefix")
	tokens := flag.Int("tokens", 20, "tokens each answer should have")
	leaveAfter := flag.Int("leave-after", 0, "close the connection after this many deltas (0: read to the end)")
	deadline := flag.Float64("deadline", 120, "seconds after which unfinished streams are abandoned")
	follow := flag.String("follow", "", "base URL a second tab of each stream reads it from (none: no second tab)")
	flag.Parse()

	want := expected(*tokens)
	transport := &http.Transport{
		DisableKeepAlives:  true,
		DisableCompression: true,
		MaxConnsPerHost:    0,
		DialContext:        (&net.Dialer{Timeout: 60 * time.Second}).DialContext,
	}
	client := &http.Client{Transport: transport}
	ctx, cancel := context.WithTimeout(context.Background(),
		time.Duration(*deadline*float64(time.Second)))
	defer cancel()

	results := make([]result, *n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < *n; i++ {
		if *ramp > 0 {
			at := start.Add(time.Duration(float64(i) / float64(*n) * *ramp * float64(time.Second)))
			if d := time.Until(at); d > 0 {
				time.Sleep(d)
			}
		}
		if ctx.Err() != nil {
			results[i] = result{err: "not started", ttft: -1}
			continue
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t := fmt.Sprintf("%s-%d", *tag, i)
			results[i] = one(ctx, client, *url, *model+"&tag="+t, want, *leaveAfter, *follow)
			results[i].tag = t
		}(i)
	}
	wg.Wait()

	s := summary{outcomes: newOutcomes(*n), Finish: map[string]int{},
		Left: map[string]float64{}, TTFTms: []float64{}}
	var gaps []float32
	for _, r := range results {
		s.add(&r)
		if r.done {
			s.Finish[r.finish]++
		}
		if r.ttft >= 0 {
			s.TTFTms = append(s.TTFTms, r.ttft)
		}
		gaps = append(gaps, r.gaps...)
		if r.leftUnix > 0 {
			s.Left[r.tag] = r.leftUnix
		}
	}
	sort.Slice(gaps, func(a, b int) bool { return gaps[a] < gaps[b] })
	s.ITLcount = len(gaps)
	if len(gaps) > 0 {
		s.ITLp50ms = float64(gaps[len(gaps)*50/100])
		s.ITLp99ms = float64(gaps[min(len(gaps)*99/100, len(gaps)-1)])
	}
	s.WallSeconds = time.Since(start).Seconds()
	if *follow != "" {
		s.Follow = summarizeFollowers(results)
	}
	out, _ := json.Marshal(s)
	os.Stdout.Write(out)
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func one(ctx context.Context, client *http.Client, url, model, want string, leaveAfter int,
	follow string) result {
	body, _ := json.Marshal(map[string]any{
		"messages": []map[string]string{{"role": "user", "content": "Hi"}},
		"model":    model,
	})
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return result{ttft: -1, err: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	var second sync.WaitGroup
	var follower *result
	r := read(client, req, want, leaveAfter, follow != "", func(data []byte) {
		var start struct {
			StreamID string `json:"stream_id"`
		}
		if follow == "" || json.Unmarshal(data, &start) != nil {
			return
		}
		second.Add(1)
		go func() {
			defer second.Done()
			f := result{ttft: -1, err: "not started"}
			events := follow + "/api/chat/" + start.StreamID + "/events"
			if req, err := http.NewRequestWithContext(ctx, "GET", events, nil); err == nil {
				f = read(client, req, want, 0, true, nil)
			}
			follower = &f
		}()
	})
	second.Wait()
	r.follower = follower
	return r
}

// read sends req and reads its event stream to its end (or, with leaveAfter, that many
// deltas); onStart gets the start event's data; with stamp each delta's id and arrival
// are kept.
func read(client *http.Client, req *http.Request, want string, leaveAfter int, stamp bool,
	onStart func([]byte)) result {
	r := result{ttft: -1}
	req.Header.Set("Accept", "text/event-stream")
	sent := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		r.err = classify(err)
		return r
	}
	defer resp.Body.Close()
	r.status = resp.StatusCode
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, resp.Body)
		return r
	}
	reader := bufio.NewReaderSize(resp.Body, 16384)
	var content strings.Builder
	var event, id string
	var data []byte
	var last time.Time
	deltas := 0
	for {
		line, err := reader.ReadBytes('\n')
		if err != nil {
			if err != io.EOF || !r.done {
				r.err = classify(err)
			}
			break
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 { // dispatch
			if event == "delta" {
				now := time.Now()
				content.WriteString(deltaContent(data))
				if deltas == 0 {
					r.ttft = float64(now.Sub(sent).Microseconds()) / 1000
				} else {
					r.gaps = append(r.gaps, float32(now.Sub(last).Microseconds())/1000)
				}
				if stamp {
					r.arrivals = append(r.arrivals, arrival{id, now})
				}
				last = now
				deltas++
				if leaveAfter > 0 && deltas >= leaveAfter {
					r.leftUnix = float64(time.Now().UnixNano()) / 1e9
					resp.Body.Close()
					break
				}
			} else if event == "start" && onStart != nil {
				onStart(data)
			} else if event == "done" {
				var d struct {
					Finish string `json:"finish_reason"`
				}
				json.Unmarshal(data, &d)
				r.done, r.finish = true, d.Finish
			} else if event == "error" {
				// The stream's last event (Rill's contract): keep it as the outcome,
				// not the EOF that follows.
				r.err = "error event: " + string(data)
				break
			}
			event, data = "", data[:0]
			continue
		}
		switch {
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("event:")):
			event = strings.TrimSpace(string(line[6:]))
		case bytes.HasPrefix(line, []byte("id:")):
			id = strings.TrimSpace(string(line[3:]))
		case bytes.HasPrefix(line, []byte("data:")):
			v := line[5:]
			if len(v) > 0 && v[0] == ' ' {
				v = v[1:]
			}
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, v...)
		}
	}
	text := content.String()
	r.tokens = strings.Count(text, "tok")
	// A client that left as planned must have seen the beginning of the text.
	r.exact = text == want || (r.leftUnix > 0 && strings.HasPrefix(want, text))
	return r
}

// summarizeFollowers sums the second tabs: their outcomes, and how long after the first
// tab each of their deltas arrived (the same event id in both).
func summarizeFollowers(results []result) *followSummary {
	f := &followSummary{outcomes: newOutcomes(len(results)), JoinMs: []float64{}}
	var lags []float64
	for _, r := range results {
		t := r.follower
		if t == nil {
			f.Errors["no second tab"]++
			continue
		}
		f.add(t)
		if t.ttft >= 0 {
			f.JoinMs = append(f.JoinMs, t.ttft)
		}
		first := make(map[string]time.Time, len(r.arrivals))
		for _, a := range r.arrivals {
			first[a.id] = a.at
		}
		for _, a := range t.arrivals {
			if at, ok := first[a.id]; ok {
				lags = append(lags, float64(a.at.Sub(at).Microseconds())/1000)
			}
		}
	}
	sort.Float64s(lags)
	f.LagCount = len(lags)
	if len(lags) > 0 {
		f.LagP50ms = lags[len(lags)*50/100]
		f.LagP99ms = lags[min(len(lags)*99/100, len(lags)-1)]
	}
	return f
}

var contentPrefix, contentSuffix = []byte(`{"content":"`), []byte(`"}`)

// deltaContent reads a delta's {"content": ...}: without escapes, by slicing (the load
// generator must stay cheap next to the servers it measures); otherwise with encoding/json.
func deltaContent(data []byte) string {
	if bytes.HasPrefix(data, contentPrefix) && bytes.HasSuffix(data, contentSuffix) {
		inner := data[len(contentPrefix) : len(data)-len(contentSuffix)]
		if bytes.IndexByte(inner, '\\') < 0 && bytes.IndexByte(inner, '"') < 0 {
			return string(inner)
		}
	}
	var d struct {
		Content string `json:"content"`
	}
	json.Unmarshal(data, &d)
	return d.Content
}

func classify(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "context deadline exceeded"):
		return "deadline"
	case strings.Contains(msg, "connection reset"):
		return "connection reset"
	case strings.Contains(msg, "connection refused"):
		return "connection refused"
	case strings.Contains(msg, "EOF"):
		return "EOF before done"
	case strings.Contains(msg, "timeout"):
		return "timeout"
	}
	if len(msg) > 80 {
		msg = msg[:80]
	}
	return msg
}
