use crate::video::RawVideo;

/// A moving test pattern: a diagonal luma ramp that slides one step per
/// frame, four colour bars and a bright square crossing the picture, so
/// every frame differs from the last (an encoder cannot send empty frames)
/// and a decoded frame shows at a glance whether it is intact.
pub struct TestPattern {
    width: u32,
    height: u32,
    frame_index: u32,
}

impl TestPattern {
    /// A pattern of the given size; both must be even (4:2:0 chroma).
    pub fn new(width: u32, height: u32) -> Self {
        assert!(
            width >= 16 && height >= 16 && width.is_multiple_of(2) && height.is_multiple_of(2),
            "test pattern size {width}x{height} must be even and at least 16x16"
        );
        Self {
            width,
            height,
            frame_index: 0,
        }
    }

    /// Draws the next frame.
    pub fn next_frame(&mut self) -> RawVideo {
        let mut frame = RawVideo::new(self.width, self.height);
        self.draw(&mut frame);
        self.frame_index = self.frame_index.wrapping_add(1);
        frame
    }

    fn draw(&self, frame: &mut RawVideo) {
        let (width, height) = (self.width as usize, self.height as usize);
        let shift = self.frame_index as usize * 4;
        let square = (height / 4).max(8);
        let square_x = (self.frame_index as usize * 8) % (width - square);
        let square_y = (height - square) / 2;
        let inner = frame.inner_mut();
        let stride = inner.stride(0);
        let luma = inner.data_mut(0);
        for y in 0..height {
            let row = &mut luma[y * stride..y * stride + width];
            for (x, pixel) in row.iter_mut().enumerate() {
                let in_square = (square_x..square_x + square).contains(&x)
                    && (square_y..square_y + square).contains(&y);
                *pixel = if in_square {
                    235
                } else {
                    (16 + (x + y + shift) % 200) as u8
                };
            }
        }
        const BARS: [(u8, u8); 4] = [(90, 240), (54, 34), (240, 110), (128, 128)];
        for (plane, pick) in [(1, 0usize), (2, 1usize)] {
            let stride = inner.stride(plane);
            let data = inner.data_mut(plane);
            for y in 0..height / 2 {
                for x in 0..width / 2 {
                    let bar = BARS[x * BARS.len() / (width / 2)];
                    data[y * stride + x] = if pick == 0 { bar.0 } else { bar.1 };
                }
            }
        }
    }
}
