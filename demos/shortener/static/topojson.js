// A small TopoJSON -> GeoJSON decoder (the part of topojson-client's feature()
// the map needs): window.topojsonFeature(topology, objectName) returns a
// GeoJSON Feature or FeatureCollection.
//
// TopoJSON stores shared borders once, as arcs; a quantized topology (with a
// "transform") stores each arc as a first point and then deltas, in integer
// units of transform.scale from transform.translate. A polygon ring lists arc
// indexes; a negative index ~i means arc i reversed. Consecutive arcs of a
// ring share their end/start point, which is kept once.
(function (global) {
  "use strict";

  function decodeArcs(topology) {
    const t = topology.transform;
    return topology.arcs.map((arc) => {
      if (!t) return arc.map((p) => [p[0], p[1]]);
      let x = 0;
      let y = 0;
      return arc.map((p) => {
        x += p[0];
        y += p[1];
        return [x * t.scale[0] + t.translate[0], y * t.scale[1] + t.translate[1]];
      });
    });
  }

  function decoder(topology) {
    const arcs = decodeArcs(topology);
    const t = topology.transform;
    const point = (p) => (t ? [p[0] * t.scale[0] + t.translate[0], p[1] * t.scale[1] + t.translate[1]] : [p[0], p[1]]);

    function line(indexes) {
      const points = [];
      indexes.forEach((index, k) => {
        const arc = index < 0 ? arcs[~index].slice().reverse() : arcs[index];
        for (let j = k > 0 ? 1 : 0; j < arc.length; j++) points.push(arc[j]);
      });
      if (points.length < 2) points.push(points[0]); // a line has at least two points
      return points;
    }

    function ring(indexes) {
      const points = line(indexes);
      while (points.length < 4) points.push(points[0]); // a closed ring has at least four
      return points;
    }

    function geometry(o) {
      switch (o.type) {
        case "GeometryCollection":
          return { type: o.type, geometries: o.geometries.map(geometry) };
        case "Point":
          return { type: o.type, coordinates: point(o.coordinates) };
        case "MultiPoint":
          return { type: o.type, coordinates: o.coordinates.map(point) };
        case "LineString":
          return { type: o.type, coordinates: line(o.arcs) };
        case "MultiLineString":
          return { type: o.type, coordinates: o.arcs.map(line) };
        case "Polygon":
          return { type: o.type, coordinates: o.arcs.map(ring) };
        case "MultiPolygon":
          return { type: o.type, coordinates: o.arcs.map((polygon) => polygon.map(ring)) };
        default:
          return null; // a null geometry
      }
    }

    function feature(o) {
      const f = { type: "Feature", properties: o.properties || {}, geometry: geometry(o) };
      if (o.id !== undefined) f.id = o.id;
      if (o.bbox !== undefined) f.bbox = o.bbox;
      return f;
    }

    return { feature, geometry };
  }

  global.topojsonFeature = function topojsonFeature(topology, name) {
    const object = topology.objects[name];
    if (!object) throw new Error(`no object ${name} in the topology`);
    const d = decoder(topology);
    if (object.type === "GeometryCollection") {
      return { type: "FeatureCollection", features: object.geometries.map(d.feature) };
    }
    return d.feature(object);
  };
})(window);
