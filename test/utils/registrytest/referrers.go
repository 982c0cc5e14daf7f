package registrytest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// specReferrers makes go-containerregistry's registry answer the Referrers API as the OCI
// distribution spec says: a referrer's artifactType is its manifest's artifactType, and its
// config's media type only when it has none. The registry reports the config's media type
// always, which hides Notary signatures (an empty config, artifactType
// application/vnd.cncf.notary.signature) as real registries (distribution, Harbor, ECR,
// ACR) do not.
func specReferrers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		elems := strings.Split(req.URL.Path, "/")
		if req.Method != http.MethodGet || len(elems) < 4 || elems[len(elems)-2] != "referrers" {
			h.ServeHTTP(w, req)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var idx v1.IndexManifest
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &idx) != nil {
			copyResponse(w, rec, rec.Body.Bytes())
			return
		}
		repo := strings.Join(elems[:len(elems)-2], "/")
		for i, d := range idx.Manifests {
			mreq := httptest.NewRequestWithContext(req.Context(), http.MethodGet, repo+"/manifests/"+d.Digest.String(), nil)
			mreq.Header = req.Header.Clone()
			mrec := httptest.NewRecorder()
			h.ServeHTTP(mrec, mreq)
			var m struct {
				ArtifactType string `json:"artifactType"`
			}
			if mrec.Code == http.StatusOK && json.Unmarshal(mrec.Body.Bytes(), &m) == nil && m.ArtifactType != "" {
				idx.Manifests[i].ArtifactType = m.ArtifactType
			}
		}
		body, err := json.Marshal(&idx)
		if err != nil {
			body = rec.Body.Bytes()
		}
		copyResponse(w, rec, body)
	})
}

func copyResponse(w http.ResponseWriter, rec *httptest.ResponseRecorder, body []byte) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rec.Code)
	_, _ = bytes.NewReader(body).WriteTo(w)
}
