// ciel all-sky projection math. Common subset of GLSL 330 core and GLSL ES 3.00 (WebGL2):
// no #version line here; the loader prepends "#version 330" or "#version 300 es" + precision.
// Shared by the desktop window, the offscreen renderer and the broadcast page.
//
// Plane units: Mollweide and Hammer-Aitoff both fill the ellipse x^2/8 + y^2/2 <= 1.
// Longitude grows to the right, latitude upwards; radians throughout.

const float CIEL_PI = 3.14159265358979;
const float CIEL_SQRT2 = 1.41421356237310;

// Distance measure of the oval: 1.0 exactly on the edge, < 1.0 inside.
float ciel_oval(vec2 p) {
    return sqrt(p.x * p.x / 8.0 + p.y * p.y / 2.0);
}

// Plane point inside the oval -> (lon, lat). projection: 0 = Mollweide, 1 = Hammer-Aitoff.
vec2 ciel_inverse(vec2 p, int projection) {
    if (projection == 1) {
        float z = sqrt(max(1.0 - p.x * p.x / 16.0 - p.y * p.y / 4.0, 0.0));
        return vec2(2.0 * atan(z * p.x, 2.0 * (2.0 * z * z - 1.0)), asin(clamp(z * p.y, -1.0, 1.0)));
    }
    float theta = asin(clamp(p.y / CIEL_SQRT2, -1.0, 1.0));
    float lat = asin(clamp((2.0 * theta + sin(2.0 * theta)) / CIEL_PI, -1.0, 1.0));
    return vec2(CIEL_PI * p.x / (2.0 * CIEL_SQRT2 * max(cos(theta), 1e-6)), lat);
}

// (lon, lat) -> unit vector; x towards lon 0, z towards the north pole.
vec3 ciel_unit(vec2 ll) {
    float c = cos(ll.y);
    return vec3(c * cos(ll.x), c * sin(ll.x), sin(ll.y));
}

// Unit vector -> (lon, lat).
vec2 ciel_lonlat(vec3 v) {
    return vec2(atan(v.y, v.x), asin(clamp(v.z, -1.0, 1.0)));
}

// Fragment coordinate (pixels, origin bottom-left) -> plane point. centre/scale from the layout.
vec2 ciel_plane(vec2 frag, vec2 centre, float scale) {
    return (frag - centre) / scale;
}
