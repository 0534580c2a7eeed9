// The inverse projection, computed once per window size and projection into a float texture the
// size of the window (desktop only; read by sky_lut.frag with texelFetch). It does not depend on
// the rotation, the mapping or the images. Source = version header + projection.glsl + this file;
// drawn with sky.vert (one full-screen triangle).
//
// Output per pixel: xyz = the view unit vector (x towards the map centre, z up), w = signed
// distance to the oval edge in pixels, positive inside (the antialiased edge and the outline are
// functions of it).
//
// With "#define CIEL_TILT 1" (an RG32F target): the table of one tilt of the sky, recomputed when
// sky/lat or sky/roll settle on new values. x = longitude of uTilt * view vector, y = its latitude
// + 4 k, where k = round(64 * edge distance clamped to +-2 px): sky_lut.frag then adds the
// longitude turned (sky/lon, sky/spin) and needs no rotation and no atan/asin per pixel.

uniform vec2 uCentre;        // oval centre, pixels (gl_FragCoord space)
uniform float uScale;        // pixels per plane unit
uniform int uProjection;     // 0 Mollweide, 1 Hammer-Aitoff
uniform mat3 uTilt;          // CIEL_TILT: Ry(-lat0) Rx(roll), the rotation without its longitude

out vec4 fragColor;

void main() {
    vec2 p = ciel_plane(gl_FragCoord.xy, uCentre, uScale);
    float r = ciel_oval(p);
    float fw = max(fwidth(r), 1e-6);
    vec3 view = ciel_unit(ciel_inverse(p, uProjection));
    float edge = clamp((1.0 - r) / fw, -64.0, 64.0);
#ifdef CIEL_TILT
    vec2 ll = ciel_lonlat(uTilt * view);
    fragColor = vec4(ll.x, ll.y + 4.0 * floor(clamp(edge, -2.0, 2.0) * 64.0 + 0.5), 0.0, 1.0);
#else
    fragColor = vec4(view, edge);
#endif
}
