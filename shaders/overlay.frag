// Text overlay: one RGBA texel per window pixel, alpha-blended over the sky.
uniform sampler2D uText;
out vec4 fragColor;

void main() {
    fragColor = texelFetch(uText, ivec2(gl_FragCoord.xy), 0);
}
