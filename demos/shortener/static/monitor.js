// The live map of one short link's visits (/m/<code>).
//
// The countries come from world-atlas's TopoJSON (no tile server: the page works
// offline), the visits from socket.io: "watch" answers the counts and the last
// visits, then each "visit" event adds a marker, whichever worker served the
// visit. ?transport=polling (or websocket) forces one transport; by default
// socket.io starts with long-polling and upgrades to WebSocket.
//
// For tests: window.shortener.markers is the number of markers drawn.
(function () {
  "use strict";

  const MAX_MARKERS = 1000; // older markers leave the map past this
  const MAX_LISTED = 30;

  const $ = (id) => document.getElementById(id);
  const code = decodeURIComponent(location.pathname.split("/")[2] || "");
  const forced = new URLSearchParams(location.search).get("transport");
  const state = (window.shortener = {
    code, markers: 0, live: 0, visits: 0, liveEvents: 0, dropped: 0,
    transport: null, connected: false, watching: false, pid: null, mapReady: false, recent: [],
  });
  const regionNames = typeof Intl.DisplayNames === "function"
    ? new Intl.DisplayNames(["en"], { type: "region" }) : null;

  $("code").textContent = code;
  document.title = `Live visits of ${code}`;

  function fail(message) {
    $("error").textContent = message;
  }

  function countryName(cc) {
    if (!cc) return null;
    try {
      return (regionNames && regionNames.of(cc)) || cc;
    } catch (_) {
      return cc;
    }
  }

  function place(v) {
    const parts = [v.city, countryName(v.country)].filter(Boolean);
    return parts.length ? parts.join(", ") : "unknown location";
  }

  // -- the map --------------------------------------------------------------

  if (typeof L !== "object" || typeof io !== "function") {
    fail("leaflet or socket.io-client missing: run `npm ci` in the repository root");
    return;
  }
  const map = L.map("map", {
    minZoom: 1, maxZoom: 8, zoomSnap: 0.25, worldCopyJump: false,
    maxBounds: [[-80, -240], [88, 240]], maxBoundsViscosity: 0.7,
  });
  map.attributionControl.addAttribution("Countries: Natural Earth (world-atlas); locations: GeoLite2 (MaxMind)");
  map.fitBounds([[-56, -168], [76, 190]]);
  map.createPane("countries").style.zIndex = 350; // below the markers' overlay pane
  const markerLayer = L.featureGroup().addTo(map);
  const markerQueue = [];

  // world-atlas is made for spherical projections: a few rings (Fiji, Chukotka)
  // jump from +180 to -180 and back, which a flat map draws as lines across
  // the world. Shift the points past each jump by 360 degrees so the ring stays
  // continuous (Chukotka then lies at 180..190, east of the rest of Russia).
  function unwrapRing(ring) {
    let shift = 0;
    const out = ring.map((p, i) => {
      if (i > 0) {
        const step = p[0] - ring[i - 1][0];
        if (step > 180) shift -= 360;
        else if (step < -180) shift += 360;
      }
      return [p[0] + shift, p[1]];
    });
    if (Math.min(...out.map((p) => p[0])) < -180) return out.map((p) => [p[0] + 360, p[1]]);
    return out;
  }

  function unwrapAntimeridian(f) {
    const g = f.geometry;
    if (g && g.type === "Polygon") g.coordinates = g.coordinates.map(unwrapRing);
    if (g && g.type === "MultiPolygon") g.coordinates = g.coordinates.map((p) => p.map(unwrapRing));
    return f;
  }

  fetch("/vendor/world-atlas/countries-110m.json")
    .then((reply) => {
      if (!reply.ok) throw new Error(`countries: HTTP ${reply.status}`);
      return reply.json();
    })
    .then((topology) => {
      const countries = topojsonFeature(topology, "countries");
      // Antarctica would be a band across the bottom of a Mercator map.
      countries.features = countries.features.filter((f) => f.id !== "010").map(unwrapAntimeridian);
      L.geoJSON(countries, {
        pane: "countries", interactive: false,
        style: { color: "#8a8f98", weight: 0.7, fillColor: "#f3f1ea", fillOpacity: 1 },
      }).addTo(map);
      state.mapReady = true;
    })
    .catch((err) => fail(`the map cannot be drawn: ${err.message}`));

  function addMarker(v) {
    const tip = document.createElement("span");
    tip.textContent = `${place(v)} — ${new Date(v.time * 1000).toLocaleTimeString()}`;
    const marker = L.circleMarker([v.lat, v.lon], {
      radius: 6, color: "#b3261e", weight: 2, fillColor: "#e8554e", fillOpacity: 0.75,
      className: "visit-marker",
    }).bindTooltip(tip);
    markerLayer.addLayer(marker);
    markerQueue.push(marker);
    if (markerQueue.length > MAX_MARKERS) markerLayer.removeLayer(markerQueue.shift());
    state.markers += 1;
    $("marker-count").textContent = String(state.markers);
  }

  // -- visits ---------------------------------------------------------------

  const seen = new Set(); // seq of the visits shown (the watch answer and live events overlap)

  function addVisit(v) {
    if (!v || v.code !== code || seen.has(v.seq)) return false;
    seen.add(v.seq);
    if (seen.size > 4 * MAX_MARKERS) {
      for (const seq of seen) if (seq < state.liveEvents - 2 * MAX_MARKERS) seen.delete(seq);
    }
    if (typeof v.lat === "number" && typeof v.lon === "number") addMarker(v);
    state.recent.push({ seq: v.seq, country: v.country, city: v.city, time: v.time });
    state.recent.sort((a, b) => a.seq - b.seq);
    if (state.recent.length > MAX_LISTED) state.recent.shift();
    renderList();
    setCounts({ visits: v.visits, live_events: v.seq });
    return true;
  }

  function renderList() {
    const list = $("visits");
    list.replaceChildren(...state.recent.slice().reverse().map((v) => {
      const li = document.createElement("li");
      const when = document.createElement("span");
      when.className = "when";
      when.textContent = new Date(v.time * 1000).toLocaleTimeString();
      const where = document.createElement("span");
      where.className = "where";
      where.textContent = place(v);
      if (v.country) where.title = v.country;
      li.append(when, where);
      return li;
    }));
  }

  function setCounts(c) {
    if (typeof c.visits === "number") state.visits = Math.max(state.visits, c.visits);
    if (typeof c.live_events === "number") state.liveEvents = Math.max(state.liveEvents, c.live_events);
    state.dropped = Math.max(state.visits - state.liveEvents, 0);
    $("visit-count").textContent = String(state.visits);
    $("dropped-count").textContent = String(state.dropped);
  }

  // -- socket.io ------------------------------------------------------------

  const status = $("status");
  const options = forced === "polling" || forced === "websocket" ? { transports: [forced] } : {};
  const socket = io(options);

  function showStatus() {
    status.className = state.connected ? "status" : "status offline";
    if (state.connected) {
      status.textContent = `live: worker pid ${state.pid ?? "?"} over ${state.transport}`;
    }
  }

  socket.on("connect", () => {
    state.connected = true;
    const engine = socket.io.engine;
    state.transport = engine.transport.name;
    engine.once("upgrade", (transport) => {
      state.transport = transport.name;
      showStatus();
    });
    showStatus();
    // (Re)join on every connect: a reconnect may land on another worker.
    socket.emit("watch", { code }, (reply) => {
      if (!reply || !reply.ok) {
        fail((reply && reply.error) || "cannot watch this link");
        return;
      }
      state.watching = true;
      state.pid = reply.pid;
      $("live-limit").textContent = String(reply.live_limit);
      $("short-url").textContent = `${location.origin}/${code}`;
      $("short-url").href = `/${code}`;
      $("target").textContent = reply.url;
      $("target").href = reply.url;
      reply.recent.forEach(addVisit);
      setCounts(reply);
      showStatus();
    });
  });

  socket.on("hello", (me) => {
    state.pid = me.pid;
    showStatus();
  });

  socket.on("visit", (v) => {
    if (addVisit(v)) state.live += 1;
  });

  socket.on("count", (c) => {
    if (c && c.code === code) setCounts(c);
  });

  socket.on("disconnect", (reason) => {
    state.connected = false;
    state.watching = false;
    status.className = "status offline";
    status.textContent = `disconnected (${reason}), reconnecting…`;
  });

  socket.on("connect_error", (err) => {
    status.className = "status offline";
    status.textContent = `cannot connect: ${err.message}`;
  });
})();
