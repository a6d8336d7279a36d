package jsstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// msg is one stored message, as the stream leader returned it.
type msg struct {
	subject string
	seq     uint64
	data    []byte
}

// msgGetResponse is the JetStream API's answer to a message get.
type msgGetResponse struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
	Message *struct {
		Subject string    `json:"subject"`
		Seq     uint64    `json:"seq"`
		Data    []byte    `json:"data"`
		Time    time.Time `json:"time"`
	} `json:"message"`
}

// errCodeNoMessage is JetStream's "no message found" (JSNoMessageFoundErr).
const errCodeNoMessage = 10037

// last returns the last message on subject (a filter may have
// wildcards), or nil if there is none. It asks the stream leader
// ($JS.API.STREAM.MSG.GET), never a replica that may lag behind an
// acknowledged append.
func (s *Store) last(ctx context.Context, subject string) (*msg, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": subject})
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	m, err := s.nc.RequestWithContext(ctx, s.getSubject, req)
	if err != nil {
		return nil, fmt.Errorf("jsstore: reading %s: %w", subject, err)
	}
	var resp msgGetResponse
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return nil, fmt.Errorf("jsstore: reading %s: the JetStream answer is not JSON: %w", subject, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrCode == errCodeNoMessage {
			return nil, nil
		}
		return nil, fmt.Errorf("jsstore: reading %s: JetStream error %d: %s", subject, resp.Error.ErrCode, resp.Error.Description)
	}
	if resp.Message == nil {
		return nil, fmt.Errorf("jsstore: reading %s: JetStream answered without a message", subject)
	}
	return &msg{subject: resp.Message.Subject, seq: resp.Message.Seq, data: resp.Message.Data}, nil
}
